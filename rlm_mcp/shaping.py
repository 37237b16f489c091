"""What tool results look like: compact JSON texts that stay within the output cap, with a note on
how to read the rest, and JSON-safe strings.

Hosts cut long tool results (Claude Code above 25k tokens), so the text of every result is capped
at --max-output-chars. The cap is measured on the text the client receives, compact JSON, where
escapes count: a newline is two characters, a control character six.
"""

from __future__ import annotations

import json
from typing import Any

from sandbox import ExecResult

__all__ = ["cap_text", "clean_json", "escaped_chars", "fitting_prefix", "json_chars", "json_text",
           "shape_exec_result"]

# Room kept for the keys, notes and small fields around the long texts of a result.
_ENVELOPE_ROOM = 600


def json_text(value: Any) -> str:
    """The text a tool result carries: compact JSON, non-ASCII kept (what a model reads is short)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def json_chars(value: Any) -> int:
    """Characters of ``value`` as a result's text: what an output cap must measure, since escapes
    and the keys of many small items add up."""
    return len(json_text(value))


def escaped_chars(text: str) -> int:
    """Characters ``text`` takes inside a JSON string (without its quotes)."""
    return len(json.dumps(text, ensure_ascii=False)) - 2


def fitting_prefix(text: str, room: int) -> int:
    """The length of the longest prefix of ``text`` that takes at most ``room`` characters in JSON."""
    if escaped_chars(text) <= room:
        return len(text)
    lo, hi = 0, min(len(text), max(room, 0))  # every character takes at least one
    while lo < hi:  # by halving: each try is one dump of a prefix
        mid = (lo + hi + 1) // 2
        if escaped_chars(text[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cap_text(text: str, limit: int, more: str) -> tuple[str, bool]:
    """Cut ``text`` to take at most ``limit`` characters in JSON, with a note saying how to see the rest."""
    if escaped_chars(text) <= limit:
        return text, False
    note = f"\n[... truncated: {len(text):,} more characters. {more}]"
    keep = fitting_prefix(text, max(limit - escaped_chars(note), 0))
    return text[:keep] + f"\n[... truncated: {len(text) - keep:,} more characters. {more}]", True


def clean_json(value: Any) -> Any:
    """Replace lone surrogates (code can build them) so the JSON layer can encode the result."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


def shape_exec_result(result: ExecResult, limit: int) -> dict[str, Any]:
    """The exec_python JSON, within ``limit`` characters as text: the error, the changed variables
    and notes get a share first, the final answer and stdout the rest (half each when both are
    there), pending prompts what is left; each cut says how to see more."""
    notes = [cap_text(n, max(limit // 20, 200), "")[0] for n in result.notes]
    error = None if result.error is None else cap_text(result.error, max(limit // 4, 500), "")[0]
    variables = _fit_mapping(result.variables, limit // 5)
    if len(variables) < len(result.variables):
        notes.append(f"{len(result.variables):,} variables changed and {len(variables):,} are listed; "
                     "SHOW_VARS() lists them all")
    shaped: dict[str, Any] = {"status": result.status, "stdout": "", "error": error, "final": None,
                              "variables": variables, "pending": []}
    if result.removed:
        shaped["removed"] = result.removed[:_fit_count(result.removed, limit // 20)]
    if result.restarted:
        shaped["restarted"] = True
        shaped["variables_lost"] = result.variables_lost[:_fit_count(result.variables_lost, limit // 20)]
    room = max(limit - json_chars(shaped) - json_chars(notes) - _ENVELOPE_ROOM, 200)
    final = result.final
    if final is not None:
        # The worker sends at most its output cap of the answer; final_chars is the whole length.
        final_chars = result.final_chars or len(final)
        final, cut = cap_text(final, room // 2 if result.stdout else room,
                              "Read the rest with get_variable('FINAL', start=...).")
        if cut or final_chars > len(result.final or ""):
            notes.append(f"the final answer has {final_chars:,} characters; read it in slices with "
                         "get_variable('FINAL', start, end)")
        shaped.update(final=final, final_chars=final_chars)
        room = max(room - escaped_chars(final), 200)
    stdout, _ = cap_text(result.stdout, room, "Print less, or keep results in variables and read "
                         "them with get_variable(name, start, end).")
    shaped["stdout"] = stdout
    shaped["pending"] = _shape_pending(result, max(room - escaped_chars(stdout), 0))
    if len(shaped["pending"]) < len(result.pending):
        notes.append(f"{len(result.pending):,} sub-queries are pending and {len(shaped['pending']):,} are listed; "
                     "answer these with answer_sub_queries and it lists the rest")
    if notes:
        shaped["notes"] = notes
    return clean_json(shaped)


def _fit_count(items: list[Any], room: int) -> int:
    """How many of the first ``items`` fit ``room`` characters of JSON (one at least)."""
    used = 2
    for i, item in enumerate(items):
        used += json_chars(item) + 1
        if used > room:
            return max(i, 1)
    return len(items)


def _fit_mapping(mapping: dict[str, Any], room: int) -> dict[str, Any]:
    return dict(list(mapping.items())[:_fit_count([[k, v] for k, v in mapping.items()], room)])


# What a listed pending item takes besides its prompt: keys, id, prompt_chars, read_more.
_PENDING_ITEM_ROOM = 160


def _shape_pending(result: ExecResult, room: int) -> list[dict[str, Any]]:
    """Pending prompts for the root model, cut to fit ``room`` characters of JSON; the rest is
    readable with get_variable('pending:<id>')."""
    if not result.pending:
        return []
    # 100,000 pending prompts must not make a 20 MB result: list as many as fit (answering
    # them brings the rest, since answer_sub_queries returns what is still pending).
    room = max(room, 1000)
    listed = result.pending[: max(1, min(len(result.pending), room // (_PENDING_ITEM_ROOM + 100)))]
    share = max(room // len(listed) - _PENDING_ITEM_ROOM, 100)
    shaped = []
    for p in listed:
        text = p.text
        item: dict[str, Any] = {"id": p.id, "prompt": text}
        keep = fitting_prefix(text, share)
        if keep < len(text):
            item["prompt"] = text[:keep]
            item["prompt_chars"] = len(text)
            item["truncated"] = True
            item["read_more"] = f"get_variable(name='pending:{p.id}', start={keep})"
        shaped.append(item)
    return shaped
