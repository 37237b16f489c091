"""Recording tool calls in one place, around the ``tools/call`` handler.

``record_call`` wraps every tool call (the server's extension interceptor calls it) and
notes its arguments, duration and result; the tool layer only says which session the call
works on (``bind_session``, one line in ``session_for``), since that is known only inside the
tool. A call that never reaches a session (arguments the SDK rejected) is not recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.types import CallToolResult, InputRequiredResult

from .format import LIMITS, clip, summarize
from .recorder import Call, Tracer

__all__ = ["bind_session", "record_call", "summarize_result", "UNRECORDED_TOOLS"]

# Looking at the trajectory is not part of it.
UNRECORDED_TOOLS = frozenset({"show_trace"})

_EXEC_TOOLS = frozenset({"exec_python", "answer_sub_queries"})


@dataclass
class _Pending:
    tool: str
    arguments: dict[str, Any]
    tracer: Tracer | None = None
    call: Call | None = None


_pending: ContextVar[_Pending | None] = ContextVar("rlm_trace_call", default=None)


def bind_session(session: Any) -> None:
    """The running tool call works on ``session``: open its record in that session's trace."""
    pending = _pending.get()
    tracer = getattr(session, "tracer", None)
    if pending is None or pending.call is not None or tracer is None or pending.tool in UNRECORDED_TOOLS:
        return
    pending.tracer = tracer
    pending.call = tracer.begin(pending.tool, pending.arguments)


async def record_call(tool: str, arguments: dict[str, Any] | None, call_next: Callable[[], Awaitable[Any]]) -> Any:
    # A session handle grants access to the session: traces (files, show_trace) never keep it.
    pending = _Pending(tool, {k: v for k, v in (arguments or {}).items() if k != "session"})
    token = _pending.set(pending)
    try:
        result = await call_next()
    except BaseException as exc:
        if pending.call is not None and pending.tracer is not None:
            reason = "cancelled" if _is_cancellation(exc) else f"{type(exc).__name__}: {exc}"
            pending.tracer.end(pending.call, None, reason)
        raise
    finally:
        _pending.reset(token)
    if pending.call is not None and pending.tracer is not None:
        summary, error = summarize_result(tool, result)
        pending.tracer.end(pending.call, summary, error)
    return result


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class())


def summarize_result(tool: str, result: Any) -> tuple[Any, str | None]:
    """What the trace keeps of a tool's result: a bounded summary, or the tool error's text."""
    if isinstance(result, InputRequiredResult):
        return {"input_required": sorted((result.input_requests or {}).keys())}, None
    if not isinstance(result, CallToolResult):
        return summarize(result), None
    text = "\n".join(getattr(block, "text", "") for block in result.content)
    if result.is_error:
        return None, text or "tool error"
    data = result.structured_content
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "session"}
    if data is None:
        return {"text": clip(text, LIMITS.output)}, None
    if tool in _EXEC_TOOLS:
        return {
            "status": data.get("status"),
            "stdout": clip(data.get("stdout"), LIMITS.output),
            "error": clip(data.get("error"), LIMITS.output),
            "final": clip(data.get("final"), LIMITS.output),
            "variables": summarize(data.get("variables"), 200),
            "pending": [{"id": p.get("id"), "prompt": clip(p.get("prompt"), LIMITS.sub_prompt)}
                        for p in (data.get("pending") or [])[:LIMITS.result_items] if isinstance(p, dict)],
        }, None
    if tool == "rlm_solve":
        return {"final": clip(data.get("final"), LIMITS.output), "iterations": data.get("iterations"),
                "completed": data.get("completed")}, None
    if tool == "sub_query":
        return {"answer": clip(data.get("answer"), LIMITS.sub_answer), "backend": data.get("backend"),
                "prompt_chars": data.get("prompt_chars")}, None
    return summarize(data), None
