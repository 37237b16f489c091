"""The trajectory file format: what one line holds, how texts are cut, how a file is read back.

A trace is JSON lines, one file per session:

- line 1, ``{"type": "header", "format": "rlm-mcp-trace", "format_version": 1, ...}``: server
  version, session label, the settings that shape a run, the configured sub-LLM backend;
- then one line per tool call, ``"type"`` being the tool's name (``load_context``, ``exec_python``,
  ``answer_sub_queries``, ``rlm_solve`` ...), with ``call`` (its number), ``ts`` (start, Unix
  seconds), ``seconds``, ``arguments`` and ``result`` (cut, see below), ``error`` (the tool error's
  text, or null), ``sub_queries`` (those made during the call: ``prompt``, ``answer``, ``backend``,
  ``seconds``, ``tokens`` ``{"prompt", "answer"}``, ``error``) and, for ``rlm_solve``, ``steps``
  (the root model's replies and the code blocks they ran);
- and events outside tool calls (``"type": "pause_cancelled"`` when an abandoned pause is failed).

Sizes stay bounded: a long text is cut to its head followed by ``… [N more characters; M in
all]``, so a 50 MB ``load_context(text=...)`` costs a few kilobytes of trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Limits",
    "LIMITS",
    "clip",
    "summarize",
    "read_trace",
    "Trajectory",
]

FORMAT = "rlm-mcp-trace"
FORMAT_VERSION = 1


class Limits:
    """Characters kept of each kind of text (the rest is cut, its length recorded)."""

    argument = 2_000  # a tool argument (a loaded text, a pattern, a question)
    code = 20_000  # exec_python's code: what the run did, kept nearly whole
    output = 8_000  # stdout, errors, final answers
    result_text = 1_000  # any other string inside a tool's result
    result_items = 50  # items kept of a list inside a result
    sub_prompt = 2_000  # one sub-query's prompt
    sub_answer = 2_000  # one sub-query's answer
    sub_queries_per_call = 5_000  # sub-queries recorded under one call; the rest are only counted


LIMITS = Limits()


def clip(text: Any, limit: int) -> Any:
    """``text`` itself when short or not a string, else its head and how much was cut."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters; {len(text):,} in all]"


def summarize(value: Any, text_limit: int = LIMITS.result_text, items: int = LIMITS.result_items,
              depth: int = 4) -> Any:
    """A bounded copy of a JSON value: strings clipped, lists cut, nesting capped."""
    if isinstance(value, str):
        return clip(value, text_limit)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth <= 0:
        return clip(json.dumps(value, ensure_ascii=False, default=str), text_limit)
    if isinstance(value, dict):
        kept = list(value.items())[:items]
        out = {str(k): summarize(v, text_limit, items, depth - 1) for k, v in kept}
        if len(value) > items:
            out["…"] = f"{len(value) - items} more keys"
        return out
    if isinstance(value, (list, tuple)):
        out_list = [summarize(v, text_limit, items, depth - 1) for v in value[:items]]
        if len(value) > items:
            out_list.append(f"… {len(value) - items} more items")
        return out_list
    return clip(str(value), text_limit)


class Trajectory:
    """A trace read back: its header (empty if the file had none) and its events in order."""

    def __init__(self, header: dict[str, Any], events: list[dict[str, Any]], skipped: int = 0) -> None:
        self.header = header
        self.events = events
        self.skipped = skipped
        """Lines that were not JSON objects (a line cut short by a killed server)."""

    def as_dict(self) -> dict[str, Any]:
        return {"header": self.header, "events": self.events, "skipped_lines": self.skipped}


def _lines(path: Path) -> Iterator[str]:
    with path.open("r", encoding="utf-8", errors="replace") as f:
        yield from f


_LEGACY_EXEC = {"<resumed>": "answer_sub_queries", "<cancelled pause>": "pause_cancelled"}


def _from_legacy(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Files written before format 1 (no header; ``exec``, ``sub_query`` and ``solve`` lines, a
    sub-query written before the execution that made it) as format-1 events."""
    events: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    for record in records:
        kind = record.get("type")
        if kind == "sub_query":
            tokens = record.get("tokens")
            waiting.append({**record, "type": None, "tokens": {"prompt": tokens, "answer": 0}
                            if isinstance(tokens, int) else {"prompt": None, "answer": None}})
        elif kind == "exec":
            code = record.get("code") or ""
            tool = _LEGACY_EXEC.get(code, "exec_python")
            event = {"type": tool, "call": len(events) + 1, "ts": record.get("ts"), "seconds": record.get("seconds"),
                     "arguments": {} if tool != "exec_python" else {"code": code}, "error": None,
                     "result": {k: record.get(k) for k in ("status", "stdout", "error", "final")}}
            if waiting:
                event["sub_queries"] = [{k: v for k, v in sub.items() if k != "type"} for sub in waiting]
                waiting = []
            events.append(event)
        elif kind == "solve":
            events.append({"type": "rlm_solve", "call": len(events) + 1, "ts": record.get("ts"), "seconds": None,
                           "arguments": {"question": record.get("question")}, "error": None,
                           "result": {"final": record.get("final"), "iterations": record.get("iterations")}})
        else:
            events.append(record)
    events += [{**sub, "type": "sub_query"} for sub in waiting]
    return events


def read_trace(path: Path) -> Trajectory:
    """Parse a trace file; unreadable lines are counted, not fatal (the last one may be cut).
    Files from before format 1 are read too (see ``_from_legacy``)."""
    header: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    skipped = 0
    for line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(record, dict):
            skipped += 1
        elif record.get("type") == "header" and not header and not events:
            header = record
        else:
            events.append(record)
    if not header and any(e.get("type") in ("exec", "solve") for e in events):
        events = _from_legacy(events)
    return Trajectory(header, events, skipped)
