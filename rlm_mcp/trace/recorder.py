"""A session's trajectory as it happens: in memory for the live view, and in ``--trace-dir``.

The tool layer opens a ``Call`` when a tool starts working on a session (``begin``) and
closes it with its result (``end``); sub-queries and ``rlm_solve`` steps that happen meanwhile
are nested under the open call that can make them. The file is created on the first event,
mode 0600 (prompts and answers are the user's data), header first, one line per event, flushed
after each.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .format import FORMAT, FORMAT_VERSION, LIMITS, clip, summarize

__all__ = ["Call", "Tracer", "SUB_QUERY_TOOLS", "add_to_totals", "new_totals"]

logger = logging.getLogger(__name__)

# The tools during which sandboxed code or the root model can make sub-queries.
SUB_QUERY_TOOLS = frozenset({"exec_python", "answer_sub_queries", "sub_query", "rlm_solve"})

# Settings that shape a run, for the header. Never the API key or the auth token.
_HEADER_SETTINGS = ("transport", "sub_llm", "llm_base_url", "llm_model", "max_concurrency", "max_depth",
                    "exec_timeout", "max_sub_queries", "max_sub_tokens", "max_sub_seconds", "sub_query_timeout", "cache_sub_queries",
                    "sub_max_tokens", "max_prompt_chars", "max_iterations", "max_output_chars", "isolation")


# Sub-queries the live view keeps in memory (about 4 KB each at most).
_KEEP_SUB_QUERIES = 20_000


@dataclass(eq=False)
class Call:
    """One tool call in progress."""

    tool: str
    number: int
    arguments: dict[str, Any]
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    sub_queries: list[dict[str, Any]] = field(default_factory=list)
    sub_queries_not_kept: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)


def new_totals() -> dict[str, Any]:
    return {"calls": 0, "executions": 0, "sub_queries": 0, "tokens": 0, "seconds": 0.0, "sub_query_seconds": 0.0,
            "errors": 0, "final": None}


def add_to_totals(totals: dict[str, Any], event: dict[str, Any]) -> None:
    """Count one event into ``totals`` (the viewer, the exporter and the live view agree on these)."""
    if event.get("type") in (None, "header"):
        return
    if "call" in event:
        totals["calls"] += 1
        totals["seconds"] += event.get("seconds") or 0.0
        if event.get("error"):
            totals["errors"] += 1
    if event.get("type") == "exec_python":
        totals["executions"] += 1
    subs = event.get("sub_queries") or ([event] if event.get("type") == "sub_query" else [])
    totals["sub_queries"] += len(subs) + (event.get("sub_queries_not_kept") or 0)
    for sub in subs:
        tokens = sub.get("tokens") or {}
        totals["tokens"] += (tokens.get("prompt") or 0) + (tokens.get("answer") or 0)
        totals["sub_query_seconds"] += sub.get("seconds") or 0.0
    result = event.get("result")
    if isinstance(result, dict):
        if result.get("status") == "error" and not event.get("error"):
            totals["errors"] += 1  # code that raised: not a tool error, still a failed step
        if result.get("final") is not None:
            totals["final"] = result["final"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class Tracer:
    """The trajectory of one session; written to ``directory`` when one is given."""

    def __init__(self, label: str, settings: Any = None, directory: Path | None = None, version: str = "",
                 keep_events: int = 2_000) -> None:
        self.label = label
        self.path = (directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{label}.jsonl"
                     if directory is not None else None)
        self.started = time.time()
        self.header: dict[str, Any] = {
            "type": "header", "format": FORMAT, "format_version": FORMAT_VERSION, "server": "rlm-mcp",
            "version": version, "session": label, "started": _iso(self.started), "ts": round(self.started, 3),
            "pid": os.getpid(),
            "settings": {name: _plain(getattr(settings, name, None)) for name in _HEADER_SETTINGS} if settings else {},
        }
        self.backend_info: Callable[[], dict[str, Any]] | None = None
        # The live view's window: the newest events, and at most _KEEP_SUB_QUERIES sub-queries in
        # them, so memory stays bounded however long the session; totals still count every event.
        self.events: deque[dict[str, Any]] = deque(maxlen=keep_events)
        self._kept_sub_queries = 0
        self.totals = new_totals()
        self._open: list[Call] = []
        self._number = 0
        self._file: IO[str] | None = None
        self._closed = False

    # -- tool calls -----------------------------------------------------------------------------

    def begin(self, tool: str, arguments: dict[str, Any]) -> Call:
        self._number += 1
        shaped = {k: (clip(v, LIMITS.code) if k == "code" else summarize(v, LIMITS.argument))
                  for k, v in arguments.items()}
        call = Call(tool, self._number, shaped)
        self._open.append(call)
        return call

    def end(self, call: Call, result: Any = None, error: str | None = None) -> dict[str, Any]:
        if call in self._open:
            self._open.remove(call)
        event: dict[str, Any] = {
            "type": call.tool, "call": call.number, "ts": round(call.ts, 3),
            "seconds": round(time.monotonic() - call.started, 4),
            "arguments": call.arguments, "result": result, "error": clip(error, LIMITS.output),
        }
        if call.sub_queries or call.sub_queries_not_kept:
            event["sub_queries"] = call.sub_queries
            if call.sub_queries_not_kept:
                event["sub_queries_not_kept"] = call.sub_queries_not_kept
        if call.steps:
            event["steps"] = call.steps
        self.write(event)
        return event

    @property
    def open_calls(self) -> list[dict[str, Any]]:
        """Calls still running (for the live view): what they are and how far they got."""
        now = time.monotonic()
        return [{"type": c.tool, "call": c.number, "ts": round(c.ts, 3), "seconds": round(now - c.started, 3),
                 "arguments": c.arguments, "running": True,
                 "sub_queries": c.sub_queries[-50:], "sub_queries_so_far": len(c.sub_queries) + c.sub_queries_not_kept}
                for c in self._open]

    def _target(self, tools: frozenset[str]) -> Call | None:
        for call in reversed(self._open):
            if call.tool in tools:
                return call
        return self._open[-1] if self._open else None

    # -- what happens inside a call ---------------------------------------------------------------

    def sub_query(self, *, backend: str, prompt: str, answer: str | None, seconds: float | None = None,
                  tokens: dict[str, int | None] | None = None, error: str | None = None,
                  model: str | None = None, cached: bool = False) -> None:
        """One sub-query, nested under the call that made it. ``tokens`` is ``{"prompt", "answer"}``
        (null where unknown); ``cached``: answered by --cache-sub-queries without a call (no tokens)."""
        record: dict[str, Any] = {
            "backend": backend, "prompt": clip(prompt, LIMITS.sub_prompt), "prompt_chars": len(prompt),
            "answer": clip(answer, LIMITS.sub_answer), "answer_chars": len(answer or ""),
            "seconds": None if seconds is None else round(seconds, 4),
            "tokens": tokens or {"prompt": None, "answer": None}, "error": clip(error, LIMITS.output),
        }
        if model:
            record["model"] = model
        if cached:
            record["cached"] = True
        call = self._target(SUB_QUERY_TOOLS)
        if call is None:
            self.write({"type": "sub_query", "ts": round(time.time(), 3), **record})
            return
        if call.tool == "rlm_solve":
            record["step"] = len(call.steps)  # the step whose code is running now (0-based)
        if len(call.sub_queries) < LIMITS.sub_queries_per_call:
            call.sub_queries.append(record)
        else:
            call.sub_queries_not_kept += 1

    def step(self, iteration: int, reply: str, code: str | None, result: Any = None) -> None:
        """One code block run by ``rlm_solve``'s root model (or a reply without code)."""
        call = self._target(frozenset({"rlm_solve"}))
        step: dict[str, Any] = {"iteration": iteration, "ts": round(time.time(), 3),
                                "response": clip(reply, LIMITS.code), "code": clip(code, LIMITS.code)}
        if result is not None:
            step.update(status=result.status, stdout=clip(result.stdout, LIMITS.output),
                        error=clip(result.error, LIMITS.output), final=clip(result.final, LIMITS.output),
                        seconds=round(result.duration, 4))
        if call is None:
            self.write({"type": "step", **step})
        else:
            call.steps.append(step)

    def event(self, kind: str, **fields: Any) -> None:
        """Something that is not a tool call (an abandoned pause failed by the reaper)."""
        self.write({"type": kind, "ts": round(time.time(), 3), **{k: summarize(v, LIMITS.output) for k, v in fields.items()}})

    # -- storage -----------------------------------------------------------------------------------

    def write(self, event: dict[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self._kept_sub_queries -= len(self.events[0].get("sub_queries") or ())
        self.events.append(event)
        self._kept_sub_queries += len(event.get("sub_queries") or ())
        while self._kept_sub_queries > _KEEP_SUB_QUERIES and len(self.events) > 1:
            self._kept_sub_queries -= len(self.events.popleft().get("sub_queries") or ())
        add_to_totals(self.totals, event)
        if self.path is None or self._closed:
            return
        try:
            if self._file is None:
                self._file = self._open_file()
            self._file.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
            self._file.flush()
        except OSError as exc:
            # The trace is a record, not the work: a full disk or an unwritable --trace-dir stops
            # the file (said once, in the log), never the tool call that was being recorded.
            logger.warning("stopped writing the trace %s: %s", self.path, exc)
            self.path = None

    def _open_file(self) -> IO[str]:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # 0600 from the start: the file holds the user's prompts and data.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        header = dict(self.header)
        if self.backend_info is not None:
            header["backend"] = summarize(self.backend_info())
        handle.write(json.dumps(header, ensure_ascii=False, default=str) + "\n")
        return handle

    def snapshot(self, last: int = 200) -> dict[str, Any]:
        """The live view's data: header, totals over the whole session, the newest events."""
        events = list(self.events)[-last:] if last > 0 else []
        header = dict(self.header)
        if self.backend_info is not None:
            header["backend"] = summarize(self.backend_info())
        return {"header": header, "totals": dict(self.totals), "events": events, "running": self.open_calls,
                "events_not_shown": self.totals["calls"] - sum(1 for e in events if "call" in e)}

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
