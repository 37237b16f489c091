"""The tools through a real MCP client in memory, in both protocol modes."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from rlm_mcp.tokens import get_token_counter

MODES = ["legacy", "auto"]
TOOLS = {"load_context", "list_contexts", "peek", "search", "exec_python", "get_variable", "rlm_status",
         "reset_session"}

DOC = "".join(f"record {i}: value={i * 7} {'ERROR' if i % 10 == 3 else 'ok'}\n" for i in range(2000))


async def call(client, tool, **args):
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    # The same JSON is sent as text for clients that ignore structured content.
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def call_error(client, tool, **args) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result
    return result.content[0].text


@pytest.mark.parametrize("mode", MODES)
async def test_every_tool_is_listed_with_a_description_for_the_model(make_client, mode):
    async with make_client(mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert TOOLS <= set(tools)
        for tool in tools.values():
            assert tool.description and len(tool.description) > 40
        assert tools["peek"].annotations.read_only_hint is True


@pytest.mark.parametrize("mode", MODES)
async def test_load_text_returns_a_summary_with_offline_token_counts(make_client, mode):
    async with make_client(mode) as client:
        summary = await call(client, "load_context", text=DOC)
        assert summary["name"] == "context"
        assert summary["chars"] == len(DOC)
        assert summary["lines"] == 2000
        # The load answers with an estimate; the exact count arrives in the background.
        assert (summary["token_count"], summary["token_encoding"]) == ("counting", "estimate")
        assert summary["tokens"] == -(-len(DOC) // 4) and "background" in summary["token_note"]
        assert summary["preview"].startswith("record 0:")
        assert "record 1999" in summary["preview"]
        for _ in range(400):
            (listed,) = (await call(client, "list_contexts"))["contexts"]
            if listed["token_count"] != "counting":
                break
            await anyio.sleep(0.05)
        assert (listed["token_count"], listed["token_encoding"]) == ("exact", "o200k_base")
        assert listed["tokens"] == get_token_counter().count(DOC)


@pytest.mark.parametrize("mode", MODES)
async def test_variables_and_contexts_persist_across_calls(make_client, mode):
    async with make_client(mode) as client:
        await call(client, "load_context", text=DOC)
        await call(client, "load_context", text="second", name="other")
        first = await call(client, "exec_python", code="errors = [l for l in context.splitlines() if 'ERROR' in l]")
        assert first["status"] == "ok"
        assert first["variables"]["errors"].startswith("list[200]")
        second = await call(client, "exec_python", code="print(len(errors), contexts['other'])\nFINAL(len(errors))")
        assert second["stdout"] == "200 second\n"
        assert second["final"] == "200"
        listed = await call(client, "list_contexts")
        assert [c["name"] for c in listed["contexts"]] == ["context", "other"]


@pytest.mark.parametrize("mode", MODES)
async def test_peek_and_search_find_the_right_offsets_and_lines(make_client, mode):
    async with make_client(mode) as client:
        await call(client, "load_context", text=DOC)
        lines = await call(client, "peek", start=3, end=5, unit="lines")
        assert lines["text"] == "record 3: value=21 ERROR\nrecord 4: value=28 ok\n"
        chars = await call(client, "peek", start=-3)
        assert chars["text"] == "ok\n"
        hits = await call(client, "search", pattern=r"record 13: \S+", window=0)
        assert len(hits["matches"]) == 1
        match = hits["matches"][0]
        assert DOC[match["start"]:].startswith("record 13:")
        assert match["line"] == 13  # from 0, as peek(unit="lines") counts
        many = await call(client, "search", pattern="ERROR", max_results=5)
        assert len(many["matches"]) == 5 and many["truncated"] is True
        more = await call(client, "search", pattern="ERROR", max_results=5, start=many["next_start"])
        assert more["matches"][0]["start"] == many["next_start"] > many["matches"][-1]["start"]


@pytest.mark.parametrize(
    ("tool", "args", "needle"),
    [
        ("load_context", {}, "exactly one source"),
        ("load_context", {"text": "a", "path": "b"}, "exactly one source"),
        ("load_context", {"path": "/etc/passwd"}, "--root"),
        ("load_context", {"path": "missing.txt"}, "no such file"),
        ("load_context", {"url": "http://127.0.0.1:9/x"}, "--allow-url"),
        ("load_context", {"text": "x", "name": "bad name!"}, "Invalid context name"),
        ("peek", {"name": "nope"}, "No context named 'nope'"),
        ("peek", {"start": 10**9}, "out of range"),
        ("peek", {"unit": "pages"}, "unit must be"),
        ("search", {"pattern": "(unclosed"}, "regex"),
        ("exec_python", {"code": ""}, "non-empty"),
        ("get_variable", {"name": "nothing_here"}, "no variable named"),
    ],
)
async def test_bad_input_is_a_tool_error_that_says_how_to_fix_it(make_client, tool, args, needle):
    async with make_client("legacy") as client:
        await call(client, "load_context", text=DOC)
        message = await call_error(client, tool, **args)
        assert needle.lower() in message.lower()
        # The session survives the bad call.
        ok = await call(client, "exec_python", code="print(len(context))")
        assert ok["stdout"] == f"{len(DOC)}\n"


async def test_code_errors_come_back_as_data_with_line_numbers_and_hints(make_client):
    async with make_client("legacy") as client:
        syntax = await call(client, "exec_python", code="x = 1\ny = (")
        assert syntax["status"] == "error" and "Line 2" in syntax["error"]
        refused = await call(client, "exec_python", code="d = {}\nd['a'] += 1")
        assert "Line 2" in refused["error"] and "d[k] = d[k] + 1" in refused["error"]
        runtime = await call(client, "exec_python", code="a = 1\nb = a / 0")
        assert "Line 2: ZeroDivisionError" in runtime["error"] and "b = a / 0" in runtime["error"]
        # No sampling, no provider: host mode, the call pauses for the root model to answer.
        paused = await call(client, "exec_python", code="llm_query('hi')")
        assert paused["status"] == "paused" and paused["pending"][0]["prompt"] == "hi"


async def test_loading_files_folders_and_globs_inside_the_roots(make_client, tmp_path: Path):
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("alpha\n")
    (tmp_path / "docs" / "deep" / "b.py").write_text("print('beta')\n")
    (tmp_path / "docs" / "image.bin").write_bytes(b"\x00\x01\x02binary")
    async with make_client("legacy") as client:
        folder = await call(client, "load_context", path="docs", name="docs")
        assert folder["files"] == 2
        assert {"path": "image.bin", "reason": "binary"} in folder["skipped"]
        got = await call(client, "peek", name="docs")
        assert "==> " in got["text"] and "alpha" in got["text"] and "beta" in got["text"]
        globbed = await call(client, "load_context", glob="docs/**/*.py", name="py")
        assert globbed["files"] == 1
        single = await call(client, "load_context", path=str(tmp_path / "docs" / "a.md"))
        assert single["chars"] == len("alpha\n")


async def test_append_adds_to_an_existing_context_in_the_sandbox_too(make_client):
    async with make_client("legacy") as client:
        await call(client, "load_context", text="one\n")
        summary = await call(client, "load_context", text="two\n", append=True)
        assert summary["chars"] == 8 and summary["appended"] is True
        seen = await call(client, "exec_python", code="print(repr(context))")
        assert seen["stdout"] == "'one\\ntwo\\n'\n"


async def test_long_outputs_are_capped_with_a_note_on_how_to_read_the_rest(make_client):
    async with make_client("legacy", max_output_chars=2000) as client:
        await call(client, "load_context", text="x" * 50_000)
        printed = await call(client, "exec_python", code="print('y' * 30000)")
        assert len(printed["stdout"]) < 2300 and "truncated" in printed["stdout"]
        final = await call(client, "exec_python", code="answer = 'z' * 9000\nFINAL_VAR('answer')")
        assert final["final_chars"] == 9000 and len(final["final"]) < 2300
        assert any("get_variable" in note for note in final["notes"])
        part = await call(client, "get_variable", name="FINAL", start=1000)
        assert part["start"] == 1000 and part["truncated"] is True and 1000 < part["end"] < 3000
        assert part["text"] == "z" * (part["end"] - 1000)
        peeked = await call(client, "peek")
        assert peeked["truncated"] is True and 0 < peeked["end"] < 2000 and len(peeked["text"]) == peeked["end"]


async def test_reset_drops_variables_and_keeps_contexts_unless_asked(make_client):
    async with make_client("legacy") as client:
        await call(client, "load_context", text="data")
        await call(client, "exec_python", code="kept = 1")
        await call(client, "reset_session")
        gone = await call(client, "exec_python", code="print(kept)")
        assert "NameError" in gone["error"]
        still = await call(client, "exec_python", code="print(context)")
        assert still["stdout"] == "data\n"
        await call(client, "reset_session", keep_contexts=False)
        listed = await call(client, "list_contexts")
        assert listed["contexts"] == []


async def test_status_reports_worker_contexts_and_variables(make_client):
    async with make_client("legacy") as client:
        await call(client, "load_context", text="data")
        await call(client, "exec_python", code="v = 2")
        status = await call(client, "rlm_status")
        assert status["variables"] == ["v"]
        assert status["contexts"][0]["name"] == "context"
        assert status["worker"]["running"] is True and status["worker"]["pid"] > 0
        assert status["max_depth"] == 1


async def test_contexts_are_resources_and_the_rlm_prompt_is_served(make_client):
    async with make_client("legacy") as client:
        await call(client, "load_context", text="hello resource", name="notes")
        templates = await client.list_resource_templates()
        assert any(t.uri_template == "context://{name}" for t in templates.resource_templates)
        read = await client.read_resource("context://notes")
        body = json.loads(read.contents[0].text)
        assert body["chars"] == len("hello resource") and body["head"] == "hello resource"
        prompt = await client.get_prompt("rlm", {"question": "How many?"})
        text = prompt.messages[0].content.text
        assert "llm_query_batched" in text and "How many?" in text


async def test_progress_is_reported_while_a_large_folder_loads(make_client, tmp_path: Path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        (folder / f"f{i:03}.txt").write_text(f"file {i}\n" * 50)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with make_client("legacy") as client:
        result = await client.call_tool("load_context", {"path": "many"}, progress_callback=on_progress)
        assert not result.is_error
        assert result.structured_content["files"] == 300
    assert len(seen) >= 2


async def test_a_catastrophic_search_pattern_is_stopped_and_the_server_keeps_answering(make_client):
    import time

    import anyio

    async with make_client("legacy", search_timeout=1.0) as client:
        await call(client, "load_context", text="x" * 5000)
        started = time.monotonic()
        answered_meanwhile = []

        async def ping_during_search() -> None:
            await anyio.sleep(0.3)
            await call(client, "list_contexts")
            answered_meanwhile.append(time.monotonic() - started)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ping_during_search)
            message = await call_error(client, "search", pattern="(x+x+)+y")
        assert "catastrophic" in message
        assert time.monotonic() - started < 8
        # The event loop was not frozen by the pattern: another call was answered before it ended.
        assert answered_meanwhile and answered_meanwhile[0] < 1.0


async def test_context_names_complete_for_the_resource_template(make_client):
    from mcp.types import ResourceTemplateReference

    async with make_client("legacy") as client:
        await call(client, "load_context", text="a", name="notes")
        await call(client, "load_context", text="b", name="news")
        await call(client, "load_context", text="c", name="other")
        result = await client.complete(ResourceTemplateReference(type="ref/resource", uri="context://{name}"),
                                       {"name": "name", "value": "n"})
        assert sorted(result.completion.values) == ["news", "notes"]


async def test_an_unknown_prompt_is_an_invalid_params_error(make_client):
    from mcp.shared.exceptions import MCPError
    from mcp.types import INVALID_PARAMS

    async with make_client("legacy") as client:
        with pytest.raises(MCPError) as raised:
            await client.get_prompt("nope")
        assert raised.value.error.code == INVALID_PARAMS and "rlm" in raised.value.error.message


async def test_the_clients_mcp_roots_become_readable_folders(tmp_path: Path):
    from mcp import Client, types

    from rlm_mcp.config import Settings
    from rlm_mcp.server import build_server

    allowed = tmp_path / "configured"
    offered = tmp_path / "offered-by-client"
    allowed.mkdir()
    offered.mkdir()
    (offered / "notes.txt").write_text("from the client's root\n")

    async def list_roots(context):
        return types.ListRootsResult(roots=[types.Root(uri=offered.as_uri(), name="workspace")])

    server = build_server(Settings(roots=(allowed,)))
    async with Client(server, mode="legacy") as without_roots:
        refused = await without_roots.call_tool("load_context", {"path": str(offered / "notes.txt")})
        assert refused.is_error and "--root" in refused.content[0].text
    async with Client(server, mode="legacy", list_roots_callback=list_roots) as client:
        loaded = await call(client, "load_context", path=str(offered / "notes.txt"))
        assert loaded["chars"] == len("from the client's root\n")
