"""What real hosts and clients need from the tool surface (issue 12): descriptions a model reads
without wasted space, arguments every form can fill, short errors, compact results within the
output cap, and a quiet stderr."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import rlm_mcp_command
from rlm_mcp.shaping import json_text

MODES = ["legacy", "auto"]


async def tools_of(client: Client) -> dict:
    return {t.name: t for t in (await client.list_tools()).tools}


async def error_text(client: Client, tool: str, args: dict) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result
    return result.content[0].text


# -- 1. answer_sub_queries takes a list of {id, answer} too -------------------------------------


async def test_answer_sub_queries_describes_both_forms_in_its_schema(make_client):
    async with make_client("legacy") as client:
        schema = (await tools_of(client))["answer_sub_queries"].input_schema
        arms = schema["properties"]["answers"]["anyOf"]
        assert {"type": "object", "additionalProperties": {"type": "string"}} in arms
        listed = next(arm for arm in arms if arm.get("type") == "array")
        item = listed["items"]  # inline: form-based clients follow no $ref
        assert item["type"] == "object" and item["required"] == ["id", "answer"]
        assert set(item["properties"]) == {"id", "answer"} and "$defs" not in schema


@pytest.mark.parametrize("form", ["object", "list"])
async def test_a_paused_execution_resumes_with_either_form_of_answers(make_client, form):
    async with make_client("legacy", sub_llm="host") as client:
        paused = await client.call_tool("exec_python", {"code": "a, b = llm_query_batched(['one?', 'two?'])\n"
                                                                "FINAL(a + '+' + b)"})
        ids = [p["id"] for p in paused.structured_content["pending"]]
        assert paused.structured_content["status"] == "paused" and len(ids) == 2
        given = dict(zip(ids, ["1", "2"]))
        answers = given if form == "object" else [{"id": k, "answer": v} for k, v in given.items()]
        done = await client.call_tool("answer_sub_queries", {"answers": answers})
        assert not done.is_error, done.content[0].text
        assert done.structured_content["final"] == "1+2"


async def test_a_list_of_answers_with_a_repeated_or_malformed_item_is_refused(make_client):
    async with make_client("legacy", sub_llm="host") as client:
        paused = await client.call_tool("exec_python", {"code": "x = llm_query('one?')"})
        qid = paused.structured_content["pending"][0]["id"]
        twice = await error_text(client, "answer_sub_queries",
                                 {"answers": [{"id": qid, "answer": "a"}, {"id": qid, "answer": "b"}]})
        assert f"{qid!r} twice" in twice
        malformed = await error_text(client, "answer_sub_queries", {"answers": [{"id": qid}]})
        assert malformed.startswith("Invalid arguments for answer_sub_queries: answers must be an object")
        assert "a list, each item an object" in malformed
        still = await client.call_tool("answer_sub_queries", {"answers": [{"id": qid, "answer": "fine"}]})
        assert still.structured_content["status"] == "ok"


# -- 2. resources/list lists each loaded context ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_resources_list_shows_each_loaded_context_and_the_template_stays(make_client, mode):
    async with make_client(mode) as client:
        before = {str(r.uri) for r in (await client.list_resources()).resources}
        assert not any(uri.startswith("context://") for uri in before)
        await client.call_tool("load_context", {"text": "hello resource", "name": "notes"})
        await client.call_tool("load_context", {"text": "x" * 5000})
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert {"context://notes", "context://context"} <= set(listed)
        assert before <= set(listed)  # the trace view's ui:// resource is still there
        notes = listed["context://notes"]
        assert notes.name == "notes" and notes.mime_type == "application/json" and "14 characters" in notes.description
        body = json.loads((await client.read_resource(notes.uri)).contents[0].text)
        assert body["head"] == "hello resource"
        templates = (await client.list_resource_templates()).resource_templates
        assert any(t.uri_template == "context://{name}" for t in templates)
        await client.call_tool("reset_session", {"keep_contexts": False})
        assert not any(str(r.uri).startswith("context://") for r in (await client.list_resources()).resources)


# -- 3. descriptions: dedented, every argument described, closed sets as enums ------------------


@pytest.mark.parametrize("mode", MODES)
async def test_descriptions_are_dedented_and_every_argument_is_described(make_client, mode):
    async with make_client(mode) as client:
        tools = await tools_of(client)
        for tool in tools.values():
            lines = tool.description.splitlines()
            assert not lines[0].startswith(" ") and not tool.description.endswith(" ")
            assert not any(line.startswith("    ") for line in lines), (tool.name, tool.description)
            for name, prop in tool.input_schema.get("properties", {}).items():
                assert len(prop.get("description", "")) > 8, f"{tool.name}.{name} has no description"
        assert tools["peek"].input_schema["properties"]["unit"]["enum"] == ["chars", "lines"]


# -- 4. wrong-type arguments: a short error naming the argument -----------------------------------


@pytest.mark.parametrize(("tool", "args", "expected"), [
    ("peek", {"start": "abc"}, "Invalid arguments for peek: start must be an integer, not the string 'abc'."),
    ("peek", {"unit": "bytes"}, "Invalid arguments for peek: unit must be one of 'chars', 'lines', not the "
                                "string 'bytes'."),
    ("peek", {"end": [1]}, "Invalid arguments for peek: end must be an integer or null, not a list."),
    ("search", {}, "Invalid arguments for search: pattern is required (a string)."),
    ("exec_python", {"code": 5}, "Invalid arguments for exec_python: code must be a string, not the integer 5."),
    ("reset_session", {"keep_contexts": "maybe"}, "Invalid arguments for reset_session: keep_contexts must be "
                                                  "true or false, not the string 'maybe'."),
])
@pytest.mark.parametrize("mode", MODES)
async def test_a_wrong_type_names_the_argument_and_what_it_must_be(make_client, mode, tool, args, expected):
    async with make_client(mode) as client:
        text = await error_text(client, tool, args)
        assert text == expected
        assert "pydantic" not in text and "http" not in text


# -- 5. compact results within --max-output-chars -------------------------------------------------

_PRINTS = {
    "letters": "print('x' * 50000)",
    "newlines": "print('x\\n' * 25000)",
    "quotes": "print('\"' * 50000)",
    "control characters": "print(chr(1) * 50000)",
    "a final answer": "FINAL('y\\n' * 50000)",
    "both": "print('p\\n' * 30000)\nFINAL('f\\t' * 30000)",
}


@pytest.mark.parametrize("cap", [20_000, 3_000])
@pytest.mark.parametrize("mode", MODES)
async def test_every_result_text_is_compact_json_within_the_output_cap(make_client, mode, cap):
    """A 50,000-character print came back as 20,240 characters under a 20,000 cap: the cap counted
    stdout, not the JSON text around it, where a newline takes two characters and \\x01 six."""
    async with make_client(mode, max_output_chars=cap) as client:
        calls = [("load_context", {"text": ("line with \"quotes\"\n" * 5000)}),
                 *[("exec_python", {"code": code}) for code in _PRINTS.values()],
                 ("get_variable", {"name": "FINAL"}),
                 ("peek", {}), ("peek", {"unit": "lines"}),
                 ("search", {"pattern": "line", "max_results": 1000, "window": 0}),
                 ("list_contexts", {}), ("rlm_status", {})]
        for tool, args in calls:
            result = await client.call_tool(tool, args)
            assert not result.is_error, result.content[0].text
            text = result.content[0].text
            assert len(text) <= cap, f"{tool}({args}): {len(text):,} characters"
            assert text == json_text(result.structured_content), f"{tool} sent other text than its data"
            assert "\n  " not in text[:200]


async def test_a_capped_print_keeps_as_much_as_fits_and_says_how_to_see_more(make_client):
    async with make_client("legacy") as client:
        result = await client.call_tool("exec_python", {"code": "print('x' * 50000)"})
        stdout = result.structured_content["stdout"]
        assert 18_000 < len(result.content[0].text) <= 20_000
        assert stdout.startswith("x" * 18_000) and "50,000" not in stdout and "truncated" in stdout
        assert "get_variable" in stdout


# -- 6. tool errors and session ends log at DEBUG ---------------------------------------------------


async def _session_with_errors(tmp_path: Path, log: Path, *flags: str) -> None:
    command = f"exec {rlm_mcp_command()} --root {tmp_path} {' '.join(flags)} 2>>{log}"
    params = StdioServerParameters(command="sh", args=["-c", command], env=dict(os.environ))
    async with Client(params, mode="legacy") as client:
        assert (await client.call_tool("peek", {"start": "abc"})).is_error
        assert (await client.call_tool("peek", {"name": "missing"})).is_error
        loaded = await client.call_tool("load_context", {"text": "abc"})
        assert json.loads(loaded.content[0].text)["chars"] == 3


async def test_tool_errors_and_session_ends_stay_off_stderr_at_the_default_level(tmp_path: Path):
    quiet, verbose = tmp_path / "quiet.log", tmp_path / "verbose.log"
    await _session_with_errors(tmp_path, quiet)
    await _session_with_errors(tmp_path, verbose, "--log-level", "DEBUG")
    routine = ("rejected arguments", "failed", "closing RLM session")
    assert not [line for line in quiet.read_text().splitlines() if any(r in line for r in routine)], \
        quiet.read_text()
    shown = verbose.read_text()
    assert all(r in shown for r in routine), shown
    assert "DEBUG mcp.server.mcpserver.server: Tool 'peek' failed" in shown
