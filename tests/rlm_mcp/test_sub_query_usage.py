"""Tokens in and out per backend: the provider's own usage figures where it reports them, else counted
with the o200k tokenizer and labelled so; in rlm_status and in the trace's sub-query events."""

from __future__ import annotations

import json

from rlm_mcp.subqueries import SUB_SYSTEM_PROMPT
from rlm_mcp.tokens import get_token_counter
from support import FakeOpenAI, call, serve_fake_openai
from test_command_backend import FAILS, write_cli


def trace_sub_queries(folder) -> list[dict]:
    (path,) = folder.glob("*.jsonl")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return [sub for event in events for sub in event.get("sub_queries", [])]


async def test_a_command_backends_tokens_are_counted_and_labelled(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "answers", "sys.stdin.read()\nprint('forty two, as the text says')")
    counter = get_token_counter()
    assert counter.encoding == "o200k_base"
    expected_in = counter.count(SUB_SYSTEM_PROMPT) + counter.count("what is the answer?")
    expected_out = counter.count("forty two, as the text says")
    traces = tmp_path / "traces"
    async with make_client("legacy", llm_command=str(cli), trace_dir=traces, cache_sub_queries=True) as client:
        result = await call(client, "exec_python", code="a = llm_query('what is the answer?')\n"
                                                        "b = llm_query('what is the answer?')")
        assert result["status"] == "ok", result
        status = await call(client, "rlm_status")
    assert status["sub_llm"]["usage"] == {"command": {
        "calls": 1, "failed": 0, "cached": 1, "counted_with": "o200k_base",
        "tokens_in": {"reported": 0, "counted": expected_in}, "tokens_out": {"reported": 0, "counted": expected_out}}}
    assert status["tokens"]["used"] == expected_in + expected_out
    first, second = trace_sub_queries(traces)
    assert first["tokens"] == {"prompt": expected_in, "answer": expected_out, "prompt_source": "counted",
                               "answer_source": "counted", "counted_with": "o200k_base"}
    assert second["cached"] is True and second["tokens"] == {"prompt": 0, "answer": 0}


async def test_a_providers_usage_is_taken_as_reported(make_client, tmp_path):
    traces = tmp_path / "traces"
    with serve_fake_openai(FakeOpenAI()) as fake:  # it reports 10 prompt and 5 completion tokens
        async with make_client("legacy", llm_base_url=fake.url, trace_dir=traces) as client:
            await call(client, "exec_python", code="llm_query_batched(['a', 'b', 'c'])")
            status = await call(client, "rlm_status")
    assert status["sub_llm"]["usage"] == {"provider": {
        "calls": 3, "failed": 0, "cached": 0,
        "tokens_in": {"reported": 30, "counted": 0}, "tokens_out": {"reported": 15, "counted": 0}}}
    assert all(s["tokens"]["prompt_source"] == "reported" and "counted_with" not in s["tokens"]
               for s in trace_sub_queries(traces))


async def test_failed_calls_are_counted_without_tokens(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "fails", FAILS)
    async with make_client("legacy", llm_command=str(cli)) as client:
        await call(client, "exec_python", code="llm_query_batched(['a', 'b'])")
        usage = (await call(client, "rlm_status"))["sub_llm"]["usage"]
    assert usage["command"]["calls"] == 2 and usage["command"]["failed"] == 2
    assert usage["command"]["tokens_in"] == {"reported": 0, "counted": 0}


async def test_host_mode_answers_are_counted_under_the_client(make_client):
    async with make_client("legacy", sub_llm="host") as client:
        paused = await call(client, "exec_python", code="print(llm_query('two words'))")
        assert paused["status"] == "paused"
        await call(client, "answer_sub_queries", answers={paused["pending"][0]["id"]: "three short words"})
        usage = (await call(client, "rlm_status"))["sub_llm"]["usage"]
    counter = get_token_counter()
    assert usage["client"]["tokens_in"]["counted"] == counter.count("two words")
    assert usage["client"]["tokens_out"]["counted"] == counter.count("three short words")
