"""Export to the reference implementation's log format (alexzhang13/rlm, ``rlm/logger/rlm_logger.py``
and ``rlm/core/types.py``), so its visualizer opens our sessions.

That format is a ``{"type": "metadata", ...RLMMetadata}`` line, then one ``{"type": "iteration",
"iteration", "timestamp", "prompt", "response", "code_blocks": [{"code", "result": {"stdout",
"stderr", "locals", "execution_time", "rlm_calls": [RLMChatCompletion], "final_answer"}}],
"final_answer", "iteration_time"}`` line per root-model turn.

How our tool calls map onto it: the root model is the MCP client, whose messages we never see,
so ``prompt`` is empty (for ``rlm_solve``, the question) and each tool call is one iteration:
``exec_python`` is a code block with its output and its sub-queries as ``rlm_calls``; a paused
execution's ``answer_sub_queries`` rounds are further iterations holding the answered
sub-queries; other tools become a one-line pseudo-call (``peek(start=0, end=400)``) whose
"output" is the result summary; ``rlm_solve`` contributes one iteration per root turn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from .format import Trajectory

__all__ = ["to_rlm_records"]


def _iso(ts: Any) -> str:
    if isinstance(ts, (int, float)):
        return datetime.fromtimestamp(ts, timezone.utc).isoformat()
    return datetime.now(timezone.utc).isoformat()


def _rlm_call(sub: dict[str, Any], default_model: str) -> dict[str, Any]:
    tokens = sub.get("tokens") or {}
    model = sub.get("model") or sub.get("backend") or default_model
    out: dict[str, Any] = {
        "root_model": model,
        "prompt": sub.get("prompt") or "",
        "response": sub.get("answer") or "",
        "usage_summary": {"model_usage_summaries": {model: {
            "total_calls": 1,
            "total_input_tokens": tokens.get("prompt") or 0,
            "total_output_tokens": tokens.get("answer") or 0,
        }}},
        "execution_time": sub.get("seconds") or 0.0,
        # Not written by the reference logger, but read by its visualizer (visualizer/src/lib/types.ts,
        # ExecutionPanel shows "N in / M out" from them).
        "prompt_tokens": tokens.get("prompt") or 0,
        "completion_tokens": tokens.get("answer") or 0,
    }
    if sub.get("error"):
        out["error"] = sub["error"]
    return out


def _block(code: str, stdout: str, stderr: str, seconds: Any, calls: list[dict[str, Any]],
           final: Any, variables: Any = None) -> dict[str, Any]:
    return {"code": code, "result": {
        "stdout": stdout or "", "stderr": stderr or "",
        "locals": variables if isinstance(variables, dict) else {},
        "execution_time": seconds or 0.0, "rlm_calls": calls, "final_answer": final,
    }}


def _pseudo_call(event: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in (event.get("arguments") or {}).items())
    return f"{event.get('type')}({args})"


def _iteration(ts: Any, prompt: Any, response: str, blocks: list[dict[str, Any]], final: Any,
               seconds: Any) -> dict[str, Any]:
    return {"type": "iteration", "timestamp": _iso(ts), "prompt": prompt, "response": response,
            "code_blocks": blocks, "final_answer": final, "iteration_time": seconds}


def _iterations(event: dict[str, Any], model: str) -> Iterator[dict[str, Any]]:
    kind = event.get("type")
    result = event.get("result") if isinstance(event.get("result"), dict) else {}
    subs = [_rlm_call(s, model) for s in event.get("sub_queries") or []]
    error = event.get("error") or ""
    if kind in ("exec_python", "answer_sub_queries"):
        code = (event.get("arguments") or {}).get("code")
        if kind == "answer_sub_queries":
            code = "# answer_sub_queries: the paused code resumed with these answers"
        final = result.get("final")
        stderr = "\n".join(x for x in (error, result.get("error") or "") if x)
        block = _block(code or "", result.get("stdout") or "", stderr, event.get("seconds"), subs, final,
                       result.get("variables"))
        yield _iteration(event.get("ts"), [], f"```repl\n{code or ''}\n```", [block], final, event.get("seconds"))
    elif kind == "rlm_solve":
        question = (event.get("arguments") or {}).get("question") or ""
        steps = event.get("steps") or []
        turns: dict[int, list[dict[str, Any]]] = {}
        replies: dict[int, dict[str, Any]] = {}
        for index, step in enumerate(steps):
            replies.setdefault(step.get("iteration") or 0, step)
            if step.get("code") is None:
                turns.setdefault(step.get("iteration") or 0, [])
                continue
            calls = [_rlm_call(s, model) for s in event.get("sub_queries") or [] if s.get("step") == index]
            turns.setdefault(step.get("iteration") or 0, []).append(
                _block(step["code"], step.get("stdout") or "", step.get("error") or "", step.get("seconds"), calls,
                       step.get("final")))
        for number in sorted(turns):
            blocks = turns[number]
            final = next((b["result"]["final_answer"] for b in blocks if b["result"]["final_answer"] is not None), None)
            if number == max(turns) and final is None:
                final = result.get("final")
            yield _iteration(replies[number].get("ts"), [{"role": "user", "content": question}],
                             replies[number].get("response") or "", blocks, final, None)
        if not turns:
            yield _iteration(event.get("ts"), [{"role": "user", "content": question}], error, [],
                             result.get("final"), event.get("seconds"))
    elif "call" in event:
        output = error or json.dumps(event.get("result"), ensure_ascii=False, indent=1)
        block = _block(_pseudo_call(event), "" if error else output, error, event.get("seconds"), subs, None)
        yield _iteration(event.get("ts"), [], f"tool call: {kind}", [block], None, event.get("seconds"))


def to_rlm_records(trajectory: Trajectory) -> Iterator[dict[str, Any]]:
    """The metadata line, then the iteration lines, as dicts ready for ``json.dumps``."""
    header = trajectory.header
    settings = header.get("settings") or {}
    backend = header.get("backend") or {}
    model = settings.get("llm_model") or backend.get("mode") or settings.get("sub_llm") or "unknown"
    yield {
        "type": "metadata",
        "timestamp": _iso(header.get("ts")),
        "root_model": "mcp-client",  # the root is the MCP client's own model, not named to the server
        "max_depth": settings.get("max_depth"),
        "max_iterations": settings.get("max_iterations"),
        "backend": backend.get("mode") or settings.get("sub_llm"),
        "backend_kwargs": {k: v for k, v in (("base_url", settings.get("llm_base_url")),
                                             ("model_name", settings.get("llm_model"))) if v},
        "environment_type": "rlm-mcp",
        "environment_kwargs": {"session": header.get("session"), "version": header.get("version")},
        "other_backends": None,
    }
    number = 0
    for event in trajectory.events:
        for iteration in _iterations(event, model):
            number += 1
            yield {"type": "iteration", "iteration": number, **{k: v for k, v in iteration.items() if k != "type"}}
