"""Sub-queries over input-required rounds, for clients on protocol 2026-07-28.

That protocol forbids server-to-client requests during a tool call, but a tool
may answer ``InputRequiredResult``: sampling requests for the client to fulfil,
plus an opaque ``request_state``; the client retries the same call with the
responses. The sandbox's pause is exactly what this needs: the code stays
blocked in ``llm_query`` between rounds, and each round carries one request frame
(a whole ``llm_query_batched`` is one round). Clients cap the rounds per call
(the Python and TypeScript SDKs: 10) and raise past it, so the server counts the
rounds of each call (in the sealed request state) and, at the cap, ends the
execution itself with a result that says to batch, leaving no worker paused.
"""

from __future__ import annotations

from typing import Any

from mcp.types import InputRequiredResult

from sandbox import SubQueryFailure

from .backends.sampling import completion_from_result, sampling_request
from .errors import InvalidInput, SubQueryFailed
from .session import RlmSession
from .subqueries import SUB_SYSTEM_PROMPT

__all__ = ["MAX_ROUNDS", "exec_round", "sub_query_round"]

# The clients' cap: InputRequiredResults one tool call may return before the client raises
# (DEFAULT_INPUT_REQUIRED_MAX_ROUNDS in the Python SDK, the same in the TypeScript SDK).
MAX_ROUNDS = 10

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


def _pause_state(serial: int, rounds: int) -> str:
    return f"{_PAUSE_STATE}{serial}:{rounds}"


def _rounds_of(state: str, session: RlmSession) -> int:
    """Rounds this call has had so far, from a state the server sealed; refuses a stale one."""
    serial, _, rounds = state[len(_PAUSE_STATE):].partition(":")
    if not session.paused or serial != str(session.pause_serial) or not rounds.isdigit():
        raise InvalidInput("This sub-query round belongs to an execution that is no longer paused; "
                           "call exec_python again without request state.")
    return int(rounds)


async def exec_round(session: RlmSession, ctx: Any, code: str) -> dict[str, Any] | InputRequiredResult:
    state = ctx.request_state
    if state is not None and state.startswith(_PAUSE_STATE):
        rounds = _rounds_of(state, session)
        result = await session.resume(_answers(ctx))
    else:
        rounds = 0
        if session.paused:
            # A fresh call while a round is outstanding: the client gave up on it.
            await _end_pause(session, "abandoned: the client started a new exec_python call")
        result = await session.exec_python(code)
    if result["status"] != "paused":
        return result
    if rounds >= MAX_ROUNDS:
        return await _stop_at_round_cap(session)
    return _input_required(session, session.pending_prompts(), _pause_state(session.pause_serial, rounds + 1))


async def _end_pause(session: RlmSession, reason: str) -> dict[str, Any] | None:
    """Fail the pending sub-queries; code that catches the error and asks again is failed again,
    a few times, and then dropped with a fresh REPL: no worker stays paused."""
    result = None
    for _ in range(3):
        if not session.paused:
            return result
        result = await session.cancel_pause(reason)
    if session.paused:
        await session.reset(keep_contexts=True)
        return None
    return result


async def _stop_at_round_cap(session: RlmSession) -> dict[str, Any]:
    message = (f"Stopped after {MAX_ROUNDS} rounds of sub-queries in one exec_python call: clients on protocol "
               f"2026-07-28 allow at most {MAX_ROUNDS} input-required rounds per tool call, and each sequential "
               "llm_query is one round. The pending llm_query raised SubQueryError and the execution ended; "
               "variables set before it are kept. Batch instead: collect the prompts in a list and call "
               "llm_query_batched(prompts) once (a whole batch is one round), then continue in a new "
               "exec_python call.")
    result = await _end_pause(session, f"round cap: {MAX_ROUNDS} input-required rounds per tool call; "
                              "use llm_query_batched")
    if result is None:
        result = {"status": "error", "stdout": "", "error": None, "final": None, "variables": {}, "pending": [],
                  "notes": ["the code kept asking after its sub-queries failed, so the REPL was reset "
                            "(contexts kept, variables lost)"]}
    earlier = result.get("error")
    return {**result, "status": "error", "error": f"{message}\n{earlier}" if earlier else message, "pending": []}


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
