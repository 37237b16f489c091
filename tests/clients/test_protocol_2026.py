"""Protocol 2026-07-28 clients (issue 12): the input-required round cap, abandoned pauses, rlm_solve.

Clients raise past 10 input-required rounds in one call (Python and TypeScript SDKs); the server ends
the execution itself at 10 with a result that says to batch, and leaves no worker paused.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client, types
from mcp.client._input_required import InputRequiredRoundsExceededError
from support import call, call_raw

from rlm_mcp.config import Settings
from rlm_mcp.mrtr import MAX_ROUNDS
from rlm_mcp.server import build_server

SEQUENTIAL = "got = []\nfor i in range({n}):\n    got.append(llm_query(f'q{{i}}'))\nFINAL(str(len(got)))"


def counting_sampler(seen: list[str]):
    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen.append(params.messages[0].content.text)
        return types.CreateMessageResult(role="assistant", model="m",
                                         content=types.TextContent(type="text", text="a"))

    return sample


async def _not_paused(client: Client) -> dict[str, Any]:
    status = await call(client, "rlm_status")
    assert status["pending"] == [] and status["worker"]["state"] != "paused", status
    return status


async def test_sequential_sub_queries_stop_at_the_round_cap_with_advice_to_batch(make_client):
    seen: list[str] = []
    async with make_client("auto", sampling_callback=counting_sampler(seen)) as client:
        run = await call(client, "exec_python", code=SEQUENTIAL.format(n=MAX_ROUNDS + 3))
        assert run["status"] == "error" and run["final"] is None
        assert "llm_query_batched" in run["error"] and f"{MAX_ROUNDS} rounds" in run["error"]
        assert run["pending"] == []
        assert len(seen) == MAX_ROUNDS
        await _not_paused(client)
        kept = await call(client, "exec_python", code="print(len(got))")
        assert kept["stdout"] == f"{MAX_ROUNDS}\n"
        # Exactly at the cap still completes; a batch of many is one round.
        done = await call(client, "exec_python", code=SEQUENTIAL.format(n=MAX_ROUNDS))
        assert done["status"] == "ok" and done["final"] == str(MAX_ROUNDS)
        batch = await call(client, "exec_python", code="FINAL(str(len(llm_query_batched([str(i) for i in range(40)]))))")
        assert batch["final"] == "40"


async def test_the_exec_python_description_tells_to_batch_on_protocol_2026(make_client):
    async with make_client() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    text = tools["exec_python"].description
    assert "2026-07-28" in text and str(MAX_ROUNDS) in text and "llm_query_batched" in text


async def test_code_that_catches_the_failure_and_asks_again_is_ended_too(make_client):
    seen: list[str] = []
    code = ("n = 0\nwhile True:\n    try:\n        llm_query('again')\n        n = n + 1\n"
            "    except SubQueryError:\n        pass")
    async with make_client("auto", sampling_callback=counting_sampler(seen)) as client:
        run = await call(client, "exec_python", code=code)
        assert run["status"] == "error" and "llm_query_batched" in run["error"]
        await _not_paused(client)
        assert (await call(client, "exec_python", code="FINAL('alive')"))["final"] == "alive"


@pytest.fixture
def low_cap_client(tmp_path):
    """A client that gives up after 3 rounds (below the server's cap), as a stricter client might."""

    def make(seen: list[str], **settings: Any) -> Client:
        server = build_server(Settings(roots=(tmp_path,), exec_timeout=20.0, **settings))
        return Client(server, mode="auto", sampling_callback=counting_sampler(seen), input_required_max_rounds=3)

    return make


async def test_an_abandoned_pause_ends_at_the_next_call(low_cap_client):
    seen: list[str] = []
    async with low_cap_client(seen) as client:
        with pytest.raises(InputRequiredRoundsExceededError):
            await client.call_tool("exec_python", {"code": "x = 1\n" + SEQUENTIAL.format(n=6)})
        run = await call(client, "exec_python", code="FINAL(str(x))")
        assert run["final"] == "1"
        await _not_paused(client)


async def test_an_abandoned_pause_ends_by_itself_after_the_pause_timeout(low_cap_client):
    seen: list[str] = []
    async with low_cap_client(seen, pause_timeout=0.3) as client:
        with pytest.raises(InputRequiredRoundsExceededError):
            await client.call_tool("exec_python", {"code": SEQUENTIAL.format(n=6)})
        status = await call(client, "rlm_status")
        assert status["pending"], "the client gave up mid-pause: the server should still be paused here"

        with anyio.fail_after(10):
            while (await call(client, "rlm_status"))["pending"]:
                await anyio.sleep(0.1)
        await _not_paused(client)


async def test_rlm_solve_on_protocol_2026_says_how_to_fix_it(make_client):
    async with make_client("auto", sampling_callback=counting_sampler([])) as client:
        await call(client, "load_context", text="some text")
        is_error, text = await call_raw(client, "rlm_solve", question="what is it?")
    assert is_error
    assert "2026-07-28" in text and "2025-11-25" in text and "--llm-base-url" in text
    assert "exec_python" in text
