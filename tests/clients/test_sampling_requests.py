"""Sampling requests carry no ``modelPreferences`` unless --model-hint names models (issue 12).

fast-agent hands the field on to its provider's API, which refuses it; tests/clients/test_fast_agent.py
shows the whole path with a real provider client. Both protocols: 2025-11-25 samples during the call,
2026-07-28 carries the requests in input-required rounds.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp import types
from support import call

from rlm_mcp.config import settings_from_args

PROTOCOLS = [("legacy", "2025-11-25"), ("auto", "2026-07-28")]


def recording_sampler(seen: list[Any]):
    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen.append(params)
        return types.CreateMessageResult(role="assistant", model="m",
                                         content=types.TextContent(type="text", text="pong"))

    return sample


@pytest.mark.parametrize(("mode", "protocol"), PROTOCOLS, ids=[p for _, p in PROTOCOLS])
async def test_sampling_requests_have_no_model_preferences_by_default(make_client, mode: str, protocol: str):
    seen: list[Any] = []
    async with make_client(mode=mode, sampling_callback=recording_sampler(seen)) as client:
        run = await call(client, "exec_python", code="FINAL(llm_query('ping'))")
        assert run["final"] == "pong"
        assert (await call(client, "rlm_status"))["protocol_version"] == protocol
    assert seen and all(params.model_preferences is None for params in seen)


@pytest.mark.parametrize(("mode", "protocol"), PROTOCOLS, ids=[p for _, p in PROTOCOLS])
async def test_model_hints_are_sent_when_configured(make_client, mode: str, protocol: str):
    seen: list[Any] = []
    async with make_client(mode=mode, sampling_callback=recording_sampler(seen),
                           model_hints=("claude-haiku", "gpt-4o-mini")) as client:
        await call(client, "exec_python", code="FINAL(llm_query('ping'))")
    assert seen
    for params in seen:
        assert [hint.name for hint in params.model_preferences.hints] == ["claude-haiku", "gpt-4o-mini"]
        assert params.model_preferences.speed_priority is None


def test_model_hint_flag_is_repeatable_and_takes_comma_lists():
    settings = settings_from_args(["--model-hint", "a, b", "--model-hint", "c"], env={})
    assert settings.model_hints == ("a", "b", "c")
    assert settings_from_args([], env={"RLM_MODEL_HINT": "x,y"}).model_hints == ("x", "y")
    assert settings_from_args([], env={}).model_hints == ()


@pytest.mark.parametrize("bad", ["", "a,,b", "x" * 201, "tab\there"])
def test_a_bad_model_hint_stops_the_start(bad: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as raised:
        settings_from_args(["--model-hint", bad], env={})
    assert raised.value.code == 2
    assert "--model-hint" in capsys.readouterr().err
