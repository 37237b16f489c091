"""What tool results look like: capped texts with a note on how to read the rest, JSON-safe strings.

Hosts cut long tool results (Claude Code above 25k tokens), so every text a tool returns is
capped and says which call reads the rest.
"""

from __future__ import annotations

import json
from typing import Any

from sandbox import ExecResult

__all__ = ["cap_text", "clean_json", "json_chars", "shape_exec_result"]


def cap_text(text: str, limit: int, more: str) -> tuple[str, bool]:
    """Cut ``text`` to ``limit`` characters with a note saying how to see the rest."""
    if len(text) <= limit:
        return text, False
    note = f"\n[... truncated: {len(text) - limit:,} more characters. {more}]"
    return text[:limit] + note, True


def json_chars(value: Any) -> int:
    """Characters of ``value`` as the SDK sends it as text (JSON, indented by 2, non-ASCII kept): what
    an output cap must measure, since escapes and the keys of many small items add up."""
    return len(json.dumps(value, indent=2, ensure_ascii=False, default=str))


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
    """The exec_python JSON: capped stdout and final answer, with notes on how to see more."""
    notes = list(result.notes)
    final = result.final
    final_chars = (result.final_chars or len(final)) if final is not None else 0
    if final is not None:
        # The worker sends at most its output cap of the answer; final_chars is the whole length.
        final, cut = cap_text(final, limit // 2 if result.stdout else limit,
                              "Read the rest with get_variable('FINAL', start=...).")
        if cut or final_chars > len(result.final or ""):
            notes.append(f"the final answer has {final_chars:,} characters; read it in slices with "
                         "get_variable('FINAL', start, end)")
    room = max(limit - (len(final) if final else 0), 1000)
    stdout, cut = cap_text(result.stdout, room, "Print less, or keep results in variables and read "
                           "them with get_variable(name, start, end).")
    shaped: dict[str, Any] = {
        "status": result.status,
        "stdout": stdout,
        "error": result.error,
        "final": final,
        "variables": result.variables,
        "pending": _shape_pending(result, limit - len(stdout) - (len(final) if final else 0)),
    }
    if len(shaped["pending"]) < len(result.pending):
        notes.append(f"{len(result.pending):,} sub-queries are pending and {len(shaped['pending']):,} are listed; "
                     "answer these with answer_sub_queries and it lists the rest")
    if result.removed:
        shaped["removed"] = result.removed
    if result.restarted:
        shaped["restarted"] = True
        shaped["variables_lost"] = result.variables_lost
    if final is not None:
        shaped["final_chars"] = final_chars
    if notes:
        shaped["notes"] = notes
    return clean_json(shaped)


def _shape_pending(result: ExecResult, room: int) -> list[dict[str, Any]]:
    """Pending prompts for the root model, cut to fit the output cap; the rest is readable with
    get_variable('pending:<id>')."""
    if not result.pending:
        return []
    # 100,000 pending prompts must not make a 20 MB result: list as many as fit (answering
    # them brings the rest, since answer_sub_queries returns what is still pending).
    listed = result.pending[: max(1, min(len(result.pending), max(room, 4000) // 200))]
    share = max(room, 4000) // len(listed)
    shaped = []
    for p in listed:
        text = p.text
        item: dict[str, Any] = {"id": p.id, "prompt": text}
        if len(text) > share:
            item["prompt"] = text[: max(share, 200)]
            item["prompt_chars"] = len(text)
            item["truncated"] = True
            item["read_more"] = f"get_variable(name='pending:{p.id}', start={max(share, 200)})"
        shaped.append(item)
    return shaped
