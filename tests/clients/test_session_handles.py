"""Session handles (issue 11): clients on protocol 2026-07-28 over streamable HTTP each get their own
session, named by the handle the server mints; 2025-11-25 and stdio clients work as before.

Every test runs real clients against a real ``rlm-mcp --http`` (or stdio) process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import rlm_mcp_command
from rlm_mcp.handles import short
from support import HttpServer, call, call_raw, http_server

GONE = "omit `session` to start a new one"


@pytest.fixture(scope="module")
def server() -> Iterator[HttpServer]:
    with http_server("--exec-timeout", "60") as running:
        yield running


async def test_two_default_clients_on_http_are_isolated(server: HttpServer):
    async with Client(server.url) as alice, Client(server.url) as bob:
        a = (await call(alice, "load_context", text="alice's secret ALPHA", name="a"))["session"]
        b = (await call(bob, "load_context", text="bob's data BETA", name="b"))["session"]
        assert a != b and len(a) >= 43
        await call(alice, "exec_python", code="mine = 'ALPHA-VAR'", session=a)
        await call(bob, "exec_python", code="mine = 'BETA-VAR'", session=b)
        for client, handle, own, theirs in ((alice, a, "a", "b"), (bob, b, "b", "a")):
            secret, other = ("ALPHA", "BETA") if own == "a" else ("BETA", "ALPHA")
            run = await call(client, "exec_python", code="print(sorted(contexts), mine, context)", session=handle)
            assert run["stdout"] == f"['{own}'] {secret}-VAR {(await _text(client, own, handle))}\n"
            assert run["session"] == handle
            assert (await call(client, "get_variable", name="mine", session=handle))["text"] == f"{secret}-VAR"
            assert secret in (await call(client, "peek", name=own, session=handle))["text"]
            is_error, text = await call_raw(client, "peek", name=theirs, session=handle)
            assert is_error and other not in text
            status = await call(client, "rlm_status", session=handle)
            assert status["session"] == handle and status["protocol_version"] == "2026-07-28"
            assert [c["name"] for c in status["contexts"]] == [own] and status["variables"] == ["mine"]
            listed = await call(client, "list_contexts", session=handle)
            assert [c["name"] for c in listed["contexts"]] == [own] and listed["session"] == handle
        # Without a handle, a 2026-07-28 call gets a new, empty session: never someone else's.
        fresh = await call(alice, "list_contexts")
        assert fresh["contexts"] == [] and fresh["session"] not in (a, b)


async def _text(client: Client, name: str, handle: str) -> str:
    return (await call(client, "peek", name=name, session=handle))["text"]


@pytest.mark.parametrize("handle", ["made-up", "A" * 43, ""])
async def test_an_unknown_or_forged_handle_is_refused_and_never_falls_back(server: HttpServer, handle: str):
    async with Client(server.url) as client:
        real = (await call(client, "load_context", text="kept apart"))["session"]
        for tool, args in (("list_contexts", {}), ("peek", {}), ("exec_python", {"code": "print(context)"}),
                           ("get_variable", {"name": "x"}), ("rlm_status", {}), ("show_trace", {}),
                           ("answer_sub_queries", {"answers": {"q1.0": "x"}}), ("reset_session", {})):
            is_error, text = await call_raw(client, tool, session=handle, **args)
            assert is_error and "gone" in text and GONE in text.lower(), (tool, text)
            assert "kept apart" not in text
        assert (await call(client, "peek", session=real))["text"] == "kept apart"


async def test_a_handle_from_another_server_is_refused(server: HttpServer):
    with http_server() as other:
        async with Client(other.url) as there:
            handle = (await call(there, "load_context", text="on the other server"))["session"]
    async with Client(server.url) as here:
        is_error, text = await call_raw(here, "peek", session=handle)
        assert is_error and GONE in text.lower()


async def test_twenty_concurrent_stateless_clients_each_see_only_their_own_context(server: HttpServer):
    n = 20
    seen: dict[int, str] = {}

    async def one(i: int) -> None:
        async with Client(server.url, read_timeout_seconds=120) as client:
            handle = (await call(client, "load_context", text=f"owner {i} TOKEN-{i:02d}-END", name=f"c{i}"))["session"]
            run = await call(client, "exec_python", session=handle,
                             code="print(sorted(contexts), [contexts[k] for k in contexts])")
            listed = await call(client, "list_contexts", session=handle)
            seen[i] = run["stdout"] + str(listed) + (await call(client, "peek", name=f"c{i}", session=handle))["text"]

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    for i in range(n):
        assert f"TOKEN-{i:02d}-END" in seen[i] and f"['c{i}']" in seen[i]
        others = [j for j in range(n) if j != i and f"TOKEN-{j:02d}-END" in seen[i]]
        assert not others, f"client {i} saw the contexts of {others}"


def _sampler(prompts: list[str]) -> Any:
    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        text = params.messages[0].content.text
        prompts.append(text)
        return types.CreateMessageResult(role="assistant", model="m",
                                         content=types.TextContent(type="text", text=f"<{text[:12]}>"))

    return sample


async def test_llm_query_under_a_handle_rides_input_required_rounds(server: HttpServer):
    prompts: list[str] = []
    async with Client(server.url, sampling_callback=_sampler(prompts)) as client, Client(server.url) as other:
        handle = (await call(client, "load_context", text="the data of this session"))["session"]
        await call(other, "load_context", text="someone else's")
        run = await call(client, "exec_python", session=handle, code=(
            "first = llm_query('about: ' + context)\n"
            "both = llm_query_batched(['one', 'two'])\n"
            "FINAL(first + ' ' + ' '.join(both))"))
        assert run["status"] == "ok" and run["session"] == handle, run
        assert run["final"] == "<about: the d> <one> <two>"
        assert prompts == ["about: the data of this session", "one", "two"]
        assert (await call(client, "get_variable", name="first", session=handle))["text"] == "<about: the d>"
        # A call without a handle gets its session in round one; the rounds after it find that
        # session through the signed request state, not by minting one per round.
        fresh = await call(client, "exec_python", code="a = llm_query('x')\nb = llm_query('y')\nFINAL(a + b)")
        assert fresh["final"] == "<x><y>" and fresh["session"] != handle
        kept = await call(client, "exec_python", code="print(a, b, sorted(contexts))", session=fresh["session"])
        assert kept["stdout"] == "<x> <y> []\n"


async def test_legacy_clients_without_handles_keep_their_protocol_session(server: HttpServer):
    async with Client(server.url, mode="legacy") as alice, Client(server.url, mode="legacy") as bob:
        first = await call(alice, "load_context", text="alice on 2025-11-25")
        await call(alice, "exec_python", code="v = 1")
        again = await call(alice, "exec_python", code="print(v, context)")
        assert again["stdout"] == "1 alice on 2025-11-25\n" and again["session"] == first["session"]
        assert (await call(alice, "rlm_status"))["protocol_version"] == "2025-11-25"
        theirs = await call(bob, "list_contexts")
        assert theirs["contexts"] == [] and theirs["session"] != first["session"]
        # The handle works for a legacy client too.
        assert (await call(bob, "peek", session=first["session"]))["text"] == "alice on 2025-11-25"


async def test_stdio_keeps_one_session_without_handles(tmp_path):
    params = StdioServerParameters(command=rlm_mcp_command(), args=["--root", str(tmp_path)], env=dict(os.environ))
    async with Client(params) as client:
        loaded = await call(client, "load_context", text="stdio text")
        run = await call(client, "exec_python", code="w = context.upper()\nFINAL(w)")
        assert run["final"] == "STDIO TEXT" and run["session"] == loaded["session"]
        assert (await call(client, "get_variable", name="w", session=loaded["session"]))["text"] == "STDIO TEXT"
        is_error, text = await call_raw(client, "peek", session="not-a-handle")
        assert is_error and GONE in text.lower()


async def test_under_an_auth_token_handles_work_for_the_default_client():
    token = "handles-" + os.urandom(8).hex()
    with http_server("--auth-token", token) as server:
        http_client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http_client, Client(streamable_http_client(server.url, http_client=http_client)) as client:
            handle = (await call(client, "load_context", text="behind a token"))["session"]
            assert (await call(client, "peek", session=handle))["text"] == "behind a token"
            is_error, text = await call_raw(client, "peek", session=handle[::-1])
            assert is_error and GONE in text.lower()


async def test_resources_name_the_session_on_2026_and_stay_implied_on_2025(server: HttpServer):
    from mcp.shared.exceptions import MCPError
    from mcp.types import ResourceTemplateReference

    async with Client(server.url) as modern, Client(server.url, mode="legacy") as legacy:
        handle = (await call(modern, "load_context", text="modern text", name="notes"))["session"]
        await call(legacy, "load_context", text="legacy text", name="notes")
        read = await modern.read_resource(f"context://{handle}/notes")
        assert '"chars": 11' in read.contents[0].text and "modern text" in read.contents[0].text
        held = (await call(modern, "rlm_status", session=handle))["sessions"]["held"]
        with pytest.raises(MCPError, match=r"context://<session>/notes"):
            await modern.read_resource("context://notes")  # no session is implied, and none is minted
        assert (await call(modern, "rlm_status", session=handle))["sessions"]["held"] == held
        with pytest.raises(MCPError, match="gone"):
            await modern.read_resource("context://not-a-handle/notes")
        assert "legacy text" in (await legacy.read_resource("context://notes")).contents[0].text
        done = await modern.complete(ResourceTemplateReference(type="ref/resource", uri="context://{session}/{name}"),
                                     {"name": "name", "value": "no"}, context_arguments={"session": handle})
        assert done.completion.values == ["notes"]


async def test_host_mode_answers_reach_the_paused_session_by_its_handle(server: HttpServer):
    async with Client(server.url) as client:  # no sampling, no provider: host mode
        paused = await call(client, "exec_python", code="a = llm_query('capital of France?')\nFINAL(a.upper())")
        assert paused["status"] == "paused", paused
        handle, [pending] = paused["session"], paused["pending"]
        is_error, text = await call_raw(client, "answer_sub_queries", answers={pending["id"]: "paris"})
        assert is_error and "nothing is paused" in text.lower()  # a new session: never the paused one
        done = await call(client, "answer_sub_queries", answers={pending["id"]: "paris"}, session=handle)
        assert done["final"] == "PARIS" and done["session"] == handle


async def test_the_handle_is_never_written_whole_to_the_log_or_the_trace(tmp_path):
    with http_server("--log-level", "DEBUG", "--trace-dir", str(tmp_path)) as logged:
        async with Client(logged.url) as client:
            handle = (await call(client, "load_context", text="traced"))["session"]
            await call(client, "exec_python", code="print(context)", session=handle)
            await call_raw(client, "peek", session=handle[:-1])
        log = logged.log()
    traces = "".join(p.read_text() for p in tmp_path.glob("*.jsonl"))
    assert "print(context)" in traces and short(handle) in log
    assert handle not in log and handle not in traces and handle[:-1] not in log


async def test_a_call_that_forgot_the_handle_says_so_when_it_fails(server: HttpServer):
    async with Client(server.url) as client:
        await call(client, "load_context", text="loaded in the first session", name="doc")
        is_error, text = await call_raw(client, "peek", name="doc")
        assert is_error and "No context named 'doc'" in text and "pass the `session` value" in text
        run = await call(client, "exec_python", code="print(contexts['doc'])")
        assert run["status"] == "error" and "pass the `session` value" in run["error"]
        # A call with its handle gets no such note.
        handle = (await call(client, "load_context", text="x", name="doc"))["session"]
        is_error, text = await call_raw(client, "peek", name="other", session=handle)
        assert is_error and "`session`" not in text
