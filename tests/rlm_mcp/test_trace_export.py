"""`rlm-mcp trace export --format rlm`: the reference implementation's log format (alexzhang13/rlm).

The expected keys are those its writers emit: ``RLMLogger.log_metadata``/``log`` and the
``to_dict`` methods of ``RLMMetadata``, ``RLMIteration``, ``CodeBlock``, ``REPLResult``,
``RLMChatCompletion`` and ``UsageSummary`` in ``rlm/core/types.py``; and, on each sub-call,
``prompt_tokens``/``completion_tokens``, which its visualizer reads (``visualizer/src/lib/types.ts``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import rlm_mcp_command
from llm_server import FakeOpenAI, serve_fake_openai
from support import call

from rlm_mcp.trace import read_trace
from rlm_mcp.trace.export import to_rlm_records

METADATA_KEYS = {"type", "timestamp", "root_model", "max_depth", "max_iterations", "backend", "backend_kwargs",
                 "environment_type", "environment_kwargs", "other_backends"}
ITERATION_KEYS = {"type", "iteration", "timestamp", "prompt", "response", "code_blocks", "final_answer",
                  "iteration_time"}
RESULT_KEYS = {"stdout", "stderr", "locals", "execution_time", "rlm_calls", "final_answer"}
CALL_KEYS = {"root_model", "prompt", "response", "usage_summary", "execution_time",
             "prompt_tokens", "completion_tokens"}  # the last two: what its visualizer reads (types.ts)
MODEL_USAGE_KEYS = {"total_calls", "total_input_tokens", "total_output_tokens"}


def _export(trace: Path, out: Path) -> list[dict]:
    done = subprocess.run([rlm_mcp_command(), "trace", "export", str(trace), "--format", "rlm", "-o", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def _check_shapes(records: list[dict]) -> None:
    assert set(records[0]) == METADATA_KEYS and records[0]["type"] == "metadata"
    for number, record in enumerate(records[1:], start=1):
        assert set(record) == ITERATION_KEYS and record["type"] == "iteration" and record["iteration"] == number
        assert isinstance(record["prompt"], list) and isinstance(record["response"], str)
        for block in record["code_blocks"]:
            assert set(block) == {"code", "result"} and set(block["result"]) == RESULT_KEYS
            for rlm_call in block["result"]["rlm_calls"]:
                assert CALL_KEYS <= set(rlm_call) <= CALL_KEYS | {"error"}
                (usage,) = rlm_call["usage_summary"]["model_usage_summaries"].values()
                assert set(rlm_call["usage_summary"]) == {"model_usage_summaries"} and set(usage) == MODEL_USAGE_KEYS


async def test_an_mcp_session_exports_one_iteration_per_tool_call_with_its_sub_queries(make_client, tmp_path):
    with serve_fake_openai(FakeOpenAI()) as fake:
        async with make_client("legacy", llm_base_url=fake.url, llm_model="small-model",
                               trace_dir=tmp_path / "traces") as client:
            await call(client, "load_context", text="some text")
            await call(client, "exec_python", code="r = llm_query_batched(['p1', 'p2', 'p3'])\nprint(len(r))")
            await client.call_tool("exec_python", {"code": "1/0"})
            await call(client, "exec_python", code="FINAL('the end')")
    (trace,) = (tmp_path / "traces").glob("*.jsonl")
    records = _export(trace, tmp_path / "out.jsonl")
    _check_shapes(records)
    meta, load, batch, error, final = records
    assert meta["backend_kwargs"] == {"base_url": fake.url, "model_name": "small-model"} and meta["max_depth"] == 1
    assert load["code_blocks"][0]["code"].startswith("load_context(text=") and load["response"] == "tool call: load_context"
    block = batch["code_blocks"][0]
    assert block["code"] == "r = llm_query_batched(['p1', 'p2', 'p3'])\nprint(len(r))"
    assert batch["response"] == f"```repl\n{block['code']}\n```" and block["result"]["stdout"] == "3\n"
    calls = block["result"]["rlm_calls"]
    assert sorted(c["prompt"] for c in calls) == ["p1", "p2", "p3"]
    assert calls[0]["root_model"] == "small-model" and calls[0]["response"].startswith("ANSWER[p")
    usage = calls[0]["usage_summary"]["model_usage_summaries"]["small-model"]
    assert usage == {"total_calls": 1, "total_input_tokens": 10, "total_output_tokens": 5}
    assert (calls[0]["prompt_tokens"], calls[0]["completion_tokens"]) == (10, 5)
    assert "ZeroDivisionError" in error["code_blocks"][0]["result"]["stderr"]
    assert final["final_answer"] == "the end" and final["code_blocks"][0]["result"]["final_answer"] == "the end"


async def test_rlm_solve_exports_one_iteration_per_root_turn(make_client, tmp_path):
    from test_subqueries import scripted_root

    with serve_fake_openai(FakeOpenAI(answer=scripted_root)) as fake:
        async with make_client("legacy", llm_base_url=fake.url, trace_dir=tmp_path / "traces") as client:
            await call(client, "load_context", text="0123456789abcdefghij" * 5)
            solved = await call(client, "rlm_solve", question="How long?")
    (trace,) = (tmp_path / "traces").glob("*.jsonl")
    records = list(to_rlm_records(read_trace(trace)))  # in-process; the test above runs the command
    _check_shapes(records)
    turns = records[2:]
    assert [len(t["code_blocks"]) for t in turns] == [1, 1, 1]
    assert all(t["prompt"] == [{"role": "user", "content": "How long?"}] for t in turns)
    assert turns[0]["response"].startswith("Let me look.")
    assert sorted(c["prompt"] for c in turns[1]["code_blocks"][0]["result"]["rlm_calls"]) == ["0123456789",
                                                                                              "abcdefghij"]
    assert turns[2]["final_answer"] == solved["final"] and turns[0]["final_answer"] is None
