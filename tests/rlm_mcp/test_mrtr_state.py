"""The request state of input-required rounds names its session and is signed: it cannot be forged,
altered, or resumed in another session (issue 11). The SDK seals it too; these tests check the
server's own signature, which holds without the SDK's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlm_mcp import handles, mrtr
from rlm_mcp.config import Settings
from rlm_mcp.errors import InvalidInput
from rlm_mcp.session import RlmSession


def _session() -> RlmSession:
    return RlmSession(Settings(), handle=handles.mint())


def test_a_state_names_the_session_it_was_issued_for():
    handle = handles.mint()
    assert mrtr.handle_in_state(mrtr._sign("pause", handle, "1", "1")) == handle
    assert mrtr.handle_in_state(None) is None


@pytest.mark.parametrize("forge", [
    lambda s: s.replace(".1.1.", ".1.2."),                    # more rounds left than were given
    lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"),  # another signature
    lambda s: s.rpartition(".")[0],                          # no signature
    lambda s: "rlm-pause:1:1",                               # the unsigned format of before
    lambda s: s.replace(s.split(".")[2], handles.mint()),    # another session, same signature
])
def test_an_altered_or_forged_state_is_refused(forge):
    state = mrtr._sign("pause", handles.mint(), "1", "1")
    with pytest.raises(InvalidInput, match="not issued by this server"):
        mrtr.handle_in_state(forge(state))


async def test_a_state_of_one_session_does_not_resume_another():
    alice, bob = _session(), _session()
    ctx = SimpleNamespace(request_state=mrtr._sign("pause", alice.handle, "1", "1"), input_responses=None)
    with pytest.raises(InvalidInput, match="belongs to another session"):
        await mrtr.exec_round(bob, ctx, "x = 1")
    ctx = SimpleNamespace(request_state=mrtr._sign("subquery", alice.handle), input_responses={"q": {}})
    with pytest.raises(InvalidInput, match="belongs to another session"):
        await mrtr.sub_query_round(bob, ctx, "a question", None, None, None)


async def test_a_state_of_an_execution_that_ended_is_refused():
    session = _session()
    ctx = SimpleNamespace(request_state=mrtr._sign("pause", session.handle, "7", "1"), input_responses=None)
    with pytest.raises(InvalidInput, match="no longer paused"):
        await mrtr.exec_round(session, ctx, "x = 1")
