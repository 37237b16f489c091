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

The request state also names the session (its handle): a client on 2026-07-28 that omitted
``session`` got a fresh session in round one, and the retries must reach that one. The state is
signed with an HMAC under a key of this process over (kind, handle, payload), so a state cannot
be forged, altered, or replayed into another session, independently of the SDK, which also
seals it (``mcp.server.request_state``: encrypted, bound to the tool call's arguments).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

from mcp.types import InputRequiredResult

from sandbox import SubQueryFailure

from .backends.sampling import completion_from_result, sampling_request
from .errors import InvalidInput, SubQueryFailed
from .session import RlmSession
from .subqueries import SUB_SYSTEM_PROMPT

__all__ = ["MAX_ROUNDS", "exec_round", "handle_in_state", "sub_query_round"]

# The clients' cap: InputRequiredResults one tool call may return before the client raises
# (DEFAULT_INPUT_REQUIRED_MAX_ROUNDS in the Python SDK, the same in the TypeScript SDK).
MAX_ROUNDS = 10

_STATE_KEY = secrets.token_bytes(32)
_STATE_FORMAT = "rlm1"
_PAUSE = "pause"
_SUBQ = "subquery"


def _sign(kind: str, handle: str, *fields: str) -> str:
    """A request state: ``rlm1.<kind>.<handle>.<fields...>.<mac>`` (handles are URL-safe: no dots)."""
    body = ".".join((_STATE_FORMAT, kind, handle, *fields))
    mac = hmac.new(_STATE_KEY, body.encode(), hashlib.sha256).digest()[:18]
    return f"{body}.{base64.urlsafe_b64encode(mac).decode()}"


def _open(state: str) -> list[str]:
    """[kind, handle, fields...] of a state this process signed; InvalidInput for any other."""
    body, _, mac = state.rpartition(".")
    parts = body.split(".")
    expected = hmac.new(_STATE_KEY, body.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:18]
    if (len(parts) < 3 or parts[0] != _STATE_FORMAT
            or not hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), base64.urlsafe_b64encode(expected))):
        raise InvalidInput("This request_state was not issued by this server (altered, forged, or from before a "
                           "restart); call the tool again without request state.")
    return parts[1:]


def handle_in_state(state: str | None) -> str | None:
    """The session a request state was issued for (None without a state)."""
    return None if state is None else _open(state)[1]


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


def _pause_state(session: RlmSession, rounds: int) -> str:
    return _sign(_PAUSE, _handle(session), str(session.pause_serial), str(rounds))


def _handle(session: RlmSession) -> str:
    if session.handle is None:
        raise InvalidInput("Sub-query rounds need a session with a handle.")
    return session.handle


def _of_session(state: str, session: RlmSession, kind: str) -> list[str] | None:
    """The fields of a state of ``kind`` issued for ``session``; None for a state of another kind;
    InvalidInput for a state of another session."""
    opened = _open(state)
    if opened[0] != kind:
        return None
    if not hmac.compare_digest(opened[1].encode(), _handle(session).encode()):
        raise InvalidInput("This request_state belongs to another session; call the tool again without "
                           "request state.")
    return opened[2:]


def _rounds_of(fields: list[str], session: RlmSession) -> int:
    """Rounds this call has had so far, from a state the server signed; refuses a stale one."""
    serial, rounds = (fields + ["", ""])[:2]
    if not session.paused or serial != str(session.pause_serial) or not rounds.isdigit():
        raise InvalidInput("This sub-query round belongs to an execution that is no longer paused; "
                           "call exec_python again without request state.")
    return int(rounds)


async def exec_round(session: RlmSession, ctx: Any, code: str) -> dict[str, Any] | InputRequiredResult:
    state = ctx.request_state
    fields = _of_session(state, session, _PAUSE) if state is not None else None
    if fields is not None:
        rounds = _rounds_of(fields, session)
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
    return _input_required(session, session.pending_prompts(), _pause_state(session, rounds + 1))


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
    state = ctx.request_state
    if state is not None and _of_session(state, session, _SUBQ) is not None and ctx.input_responses:
        answer = next(iter(_answers(ctx).values()))
        if isinstance(answer, SubQueryFailure):
            raise SubQueryFailed(answer.message)
        await session.router.account_host_answers([text], [answer])
        return {"answer": answer, "backend": "sampling (input-required round)", "prompt_chars": len(text),
                "truncated": False}
    return _input_required(session, [{"id": "q", "prompt": text}], _sign(_SUBQ, _handle(session)))
