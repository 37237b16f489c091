"""Sub-queries over input-required rounds, for clients on protocol 2026-07-28.

That protocol forbids server-to-client requests during a tool call, but a tool
may answer ``InputRequiredResult``: sampling requests for the client to fulfil,
plus an opaque ``request_state``; the client retries the same call with the
responses. The sandbox's pause is exactly what this needs: the code stays
blocked in ``llm_query`` between rounds, and each round carries one request frame
(a whole ``llm_query_batched`` is one round). Clients cap the rounds per call
(the Python and TypeScript SDKs: 10), so code should batch its sub-queries.
"""

from __future__ import annotations

from typing import Any

from mcp.types import InputRequiredResult

from sandbox import SubQueryFailure

from .backends.sampling import completion_from_result, sampling_request
from .errors import InvalidInput, SubQueryFailed
from .session import RlmSession
from .subqueries import SUB_SYSTEM_PROMPT

__all__ = ["exec_round", "sub_query_round"]

_PAUSE_STATE = "rlm-pause:"
_SUBQ_STATE = "rlm-subquery"


def _answers(ctx: Any) -> dict[str, str | SubQueryFailure]:
    answers: dict[str, str | SubQueryFailure] = {}
    for key, response in (ctx.input_responses or {}).items():
        try:
            answers[key] = completion_from_result(response).text
        except SubQueryFailed as exc:
            answers[key] = SubQueryFailure(str(exc))
    return answers


def _input_required(session: RlmSession, pending: list[dict[str, str]], state: str) -> InputRequiredResult:
    return InputRequiredResult(
        input_requests={
            p["id"]: sampling_request([{"role": "user", "content": p["prompt"]}], SUB_SYSTEM_PROMPT,
                                      session.settings.sub_max_tokens, session.settings.model_hints)
            for p in pending
        },
        request_state=state,
    )


async def exec_round(session: RlmSession, ctx: Any, code: str) -> dict[str, Any] | InputRequiredResult:
    state = ctx.request_state
    if state is not None and state.startswith(_PAUSE_STATE):
        if not session.paused or state != f"{_PAUSE_STATE}{session.pause_serial}":
            raise InvalidInput("This sub-query round belongs to an execution that is no longer paused; "
                               "call exec_python again without request state.")
        result = await session.resume(_answers(ctx))
    else:
        if session.paused:
            # A fresh call while a round is outstanding: the client gave up on it.
            await session.cancel_pause("abandoned: the client started a new exec_python call")
            if session.paused:
                await session.reset(keep_contexts=True)
        result = await session.exec_python(code)
    if result["status"] == "paused":
        return _input_required(session, session.pending_prompts(), f"{_PAUSE_STATE}{session.pause_serial}")
    return result


async def sub_query_round(session: RlmSession, ctx: Any, prompt: str, name: str | None, start: int | None,
                          end: int | None) -> dict[str, Any] | InputRequiredResult:
    text = await session.sub_query_prompt(prompt, name, start, end)
    if ctx.request_state == _SUBQ_STATE and ctx.input_responses:
        answer = next(iter(_answers(ctx).values()))
        if isinstance(answer, SubQueryFailure):
            raise SubQueryFailed(answer.message)
        await session.router.account_host_answers([text], [answer])
        return {"answer": answer, "backend": "sampling (input-required round)", "prompt_chars": len(text),
                "truncated": False}
    return _input_required(session, [{"id": "q", "prompt": text}], _SUBQ_STATE)
