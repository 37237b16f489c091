"""Whole trajectories in --trace-dir: one private file per session, a header, one event per tool call."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from llm_server import FakeOpenAI, serve_fake_openai
from support import call

from rlm_mcp.trace import Tracer, read_trace


def _trace(folder: Path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    files = list(folder.glob("*.jsonl"))
    assert len(files) == 1, files
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    return files[0], lines[0], lines[1:]


async def test_trace_file_is_private_with_a_header_and_one_event_per_tool_call(make_client, tmp_path: Path):
    traces = tmp_path / "traces"
    with serve_fake_openai(FakeOpenAI()) as fake:
        async with make_client("legacy", llm_base_url=fake.url, llm_api_key="sk-secret-key",
                               trace_dir=traces) as client:
            await call(client, "load_context", text="alpha\nbeta\ngamma\n" * 100)
            await call(client, "peek", start=0, end=10)
            await call(client, "search", pattern="beta", max_results=2)
            await call(client, "exec_python", code="r = llm_query_batched(['one', 'two'])\nprint(r)")
            await call(client, "sub_query", prompt="three")
            await call(client, "rlm_status")
            await call(client, "exec_python", code="FINAL('done')")
    path, header, events = _trace(traces)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "sk-secret-key" not in path.read_text()
    assert header["type"] == "header" and header["format"] == "rlm-mcp-trace" and header["version"]
    assert header["settings"]["llm_base_url"] == fake.url and header["backend"]["configured"] == "auto"
    assert header["settings"]["isolation"] == "auto" and header["settings"]["max_sub_queries"] == 1000
    assert [e["type"] for e in events] == ["load_context", "peek", "search", "exec_python", "sub_query",
                                           "rlm_status", "exec_python"]
    assert [e["call"] for e in events] == list(range(1, 8))
    assert all(e["seconds"] >= 0 and e["ts"] >= header["ts"] - 1 for e in events)
    exec_event = events[3]
    assert exec_event["arguments"]["code"].startswith("r = llm_query_batched")
    assert exec_event["result"]["status"] == "ok" and "ANSWER[one]" in exec_event["result"]["stdout"]
    subs = exec_event["sub_queries"]
    assert sorted(s["prompt"] for s in subs) == ["one", "two"]
    for sub in subs:
        assert sub["backend"] == "provider" and sub["answer"].startswith("ANSWER[") and sub["seconds"] >= 0
        assert sub["tokens"] == {"prompt": 10, "answer": 5,  # the provider's usage figures
                                 "prompt_source": "reported", "answer_source": "reported"}
    assert events[4]["sub_queries"][0]["prompt"] == "three"
    assert "sub_queries" not in events[1] and events[6]["result"]["final"] == "done"


async def test_long_texts_are_cut_with_their_length_so_the_file_stays_small(make_client, tmp_path: Path):
    traces = tmp_path / "traces"
    with serve_fake_openai(FakeOpenAI(answer=lambda m: "y" * 50_000)) as fake:
        async with make_client("legacy", llm_base_url=fake.url, trace_dir=traces) as client:
            await call(client, "load_context", text="x" * 300_000)
            await call(client, "exec_python", code="a = llm_query(context[:100000])\nprint(a)")
    path, _, events = _trace(traces)
    assert path.stat().st_size < 60_000
    assert "300,000 in all" in events[0]["arguments"]["text"]
    sub = events[1]["sub_queries"][0]
    assert sub["prompt_chars"] == 100_000 and "100,000 in all" in sub["prompt"]
    assert sub["answer_chars"] == 50_000 and "50,000 in all" in sub["answer"]
    assert "in all]" in events[1]["result"]["stdout"]


async def test_host_mode_answers_are_nested_under_answer_sub_queries(make_client, tmp_path: Path):
    traces = tmp_path / "traces"
    async with make_client("legacy", sub_llm="host", trace_dir=traces) as client:
        paused = await call(client, "exec_python", code="a = llm_query('Which colour?')\nFINAL(a)")
        qid = paused["pending"][0]["id"]
        await call(client, "answer_sub_queries", answers={qid: "green"})
    _, header, events = _trace(traces)
    assert [e["type"] for e in events] == ["exec_python", "answer_sub_queries"]
    assert events[0]["result"]["status"] == "paused"
    assert events[0]["result"]["pending"] == [{"id": qid, "prompt": "Which colour?"}]
    sub = events[1]["sub_queries"][0]
    assert sub["backend"] == "client" and sub["prompt"] == "Which colour?" and sub["answer"] == "green"
    assert sub["tokens"]["prompt"] > 0 and sub["tokens"]["answer"] > 0
    assert events[1]["arguments"] == {"answers": {qid: "green"}} and events[1]["result"]["final"] == "green"


async def test_a_tool_error_is_recorded_with_its_message(make_client, tmp_path: Path):
    traces = tmp_path / "traces"
    async with make_client("legacy", trace_dir=traces) as client:
        result = await client.call_tool("peek", {"name": "nowhere"})
        assert result.is_error
    _, _, events = _trace(traces)
    assert events[0]["type"] == "peek" and "nowhere" in events[0]["error"] and events[0]["result"] is None


async def test_rlm_solve_records_each_root_step_with_the_sub_queries_it_made(make_client, tmp_path: Path):
    from test_subqueries import scripted_root

    traces = tmp_path / "traces"
    with serve_fake_openai(FakeOpenAI(answer=scripted_root)) as fake:
        async with make_client("legacy", llm_base_url=fake.url, trace_dir=traces) as client:
            await call(client, "load_context", text="0123456789abcdefghij" * 5)
            solved = await call(client, "rlm_solve", question="How long?")
    _, _, events = _trace(traces)
    solve = events[-1]
    assert solve["type"] == "rlm_solve" and solve["result"]["final"] == solved["final"]
    assert [s["iteration"] for s in solve["steps"]] == [1, 2, 3]
    assert solve["steps"][0]["code"] == "n = len(context)\nprint(n)" and solve["steps"][0]["stdout"] == "100\n"
    assert "Let me look." in solve["steps"][0]["response"]
    assert sorted(s["prompt"] for s in solve["sub_queries"] if s["step"] == 1) == ["0123456789", "abcdefghij"]


async def test_without_trace_dir_nothing_is_written_but_the_session_keeps_its_trajectory(make_client, tmp_path):
    async with make_client("legacy") as client:
        await call(client, "exec_python", code="print(1)")
        session = client.rlm_server.rlm_registry.sessions[0]
        assert session.tracer.path is None
        snapshot = session.tracer.snapshot()
        assert [e["type"] for e in snapshot["events"]] == ["exec_python"] and snapshot["totals"]["executions"] == 1


def test_a_trace_cut_short_by_a_killed_server_still_reads(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"type": "header", "format": "rlm-mcp-trace"}\n{"type": "peek", "call": 1}\n{"type": "exe')
    trajectory = read_trace(path)
    assert trajectory.header["format"] == "rlm-mcp-trace"
    assert [e["type"] for e in trajectory.events] == ["peek"] and trajectory.skipped == 1


def test_the_live_view_keeps_bounded_memory_but_counts_everything():
    tracer = Tracer("s", keep_events=50)
    for i in range(30):
        call = tracer.begin("exec_python", {"code": f"print({i})"})
        for _ in range(1_000):
            tracer.sub_query(backend="fake", prompt="p" * 10_000, answer="a", tokens={"prompt": 2, "answer": 1})
        tracer.end(call, {"status": "ok"})
    held = list(tracer.events)  # 30,000 sub-queries made, the newest 20,000 held, each prompt cut
    assert len(held) == 20 and sum(len(e["sub_queries"]) for e in held) == 20_000
    assert held[-1]["arguments"]["code"] == "print(29)"
    assert max(len(s["prompt"]) for e in held for s in e["sub_queries"]) < 2_100
    for i in range(100):
        tracer.end(tracer.begin("peek", {}), {})
    kept = list(tracer.events)
    assert len(kept) == 50 and sum(len(e.get("sub_queries") or ()) for e in kept) == 0
    assert tracer.totals["sub_queries"] == 30_000 and tracer.totals["tokens"] == 90_000
    assert tracer.totals["calls"] == 130
    snapshot = tracer.snapshot(last=10)
    assert len(snapshot["events"]) == 10 and snapshot["events_not_shown"] == 120


async def test_a_child_rlm_records_into_its_parents_trace_under_the_call_that_started_it(make_client, tmp_path):
    from test_subqueries import scripted_root

    traces = tmp_path / "traces"
    with serve_fake_openai(FakeOpenAI(answer=scripted_root)) as fake:
        async with make_client("legacy", llm_base_url=fake.url, max_depth=2, trace_dir=traces) as client:
            child = await call(client, "exec_python", code="print(rlm_query('Q?', 'x' * 42))")
            assert child["stdout"].startswith("42 sub:")
    _, _, events = _trace(traces)  # one file: the child wrote none of its own
    (event,) = events
    assert event["type"] == "exec_python"
    assert sorted(s["prompt"] for s in event["sub_queries"]) == ["xxxxxxxxxx", "xxxxxxxxxx"]


def test_the_trace_package_exports_what_it_names():
    import rlm_mcp.trace as trace

    assert all(hasattr(trace, name) for name in trace.__all__)


async def test_on_protocol_2026_each_input_required_round_is_an_event_with_the_answers_it_brought(
        make_client, tmp_path: Path):
    from test_subqueries import Sampler

    traces = tmp_path / "traces"
    async with make_client("auto", sampling_callback=Sampler(), trace_dir=traces) as client:
        code = "pair = llm_query_batched(['a', 'b'])\nFINAL(llm_query('c'))"
        assert (await call(client, "exec_python", code=code))["final"] == "A(c)"
    _, _, events = _trace(traces)
    assert [e["type"] for e in events] == ["exec_python"] * 3
    assert [len(e["result"]["input_required"]) for e in events[:2]] == [2, 1]  # the ids of the requests
    assert [sorted(s["answer"] for s in e.get("sub_queries", [])) for e in events] == [[], ["A(a)", "A(b)"], ["A(c)"]]
    assert events[2]["result"]["final"] == "A(c)"


async def test_over_http_each_session_gets_its_own_file_and_show_trace_sees_only_its_own(tmp_path: Path):
    from mcp import Client
    from support import http_server

    traces = tmp_path / "traces"
    with http_server("--trace-dir", str(traces), "--sub-llm", "host", root=tmp_path) as server:
        async with Client(server.url, mode="legacy") as alice, Client(server.url, mode="legacy") as bob:
            await call(alice, "exec_python", code="print('alice was here')")
            await bob.call_tool("list_contexts", {})
            seen = (await bob.call_tool("show_trace", {})).content[0].text
            assert "list_contexts" in seen and "alice" not in seen
    files = sorted(traces.glob("*.jsonl"))
    assert len(files) == 2 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    kinds = sorted(tuple(e["type"] for e in read_trace(f).events) for f in files)
    assert kinds == [("exec_python",), ("list_contexts",)]


def test_a_trace_written_before_format_1_reads_as_tool_call_events(tmp_path: Path):
    from rlm_mcp.trace.export import to_rlm_records

    old = [
        {"ts": 1.0, "type": "sub_query", "backend": "provider", "prompt": "a", "answer": "A", "error": None,
         "tokens": 15, "seconds": 0.1},
        {"ts": 1.1, "type": "exec", "code": "r = llm_query('a')", "status": "ok", "stdout": "", "error": None,
         "final": None, "pending": [], "seconds": 0.2},
        {"ts": 2.0, "type": "exec", "code": "x = llm_query('b')", "status": "paused", "stdout": "", "error": None,
         "final": None, "pending": ["b"], "seconds": 0.1},
        {"ts": 3.0, "type": "sub_query", "backend": "client", "prompt": "b", "answer": "B"},
        {"ts": 3.1, "type": "exec", "code": "<resumed>", "status": "ok", "stdout": "", "error": None,
         "final": "B", "pending": [], "seconds": 0.1},
    ]
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    events = read_trace(path).events
    assert [e["type"] for e in events] == ["exec_python", "exec_python", "answer_sub_queries"]
    assert events[0]["sub_queries"][0]["prompt"] == "a" and events[0]["sub_queries"][0]["tokens"]["prompt"] == 15
    assert events[2]["sub_queries"][0]["answer"] == "B" and events[2]["result"]["final"] == "B"
    records = list(to_rlm_records(read_trace(path)))
    assert [len(r["code_blocks"][0]["result"]["rlm_calls"]) for r in records[1:]] == [1, 0, 1]


async def test_a_pause_abandoned_and_failed_by_the_reaper_is_an_event(make_client, tmp_path: Path):
    import anyio

    traces = tmp_path / "traces"
    async with make_client("legacy", sub_llm="host", pause_timeout=0.2, trace_dir=traces) as client:
        await call(client, "exec_python", code="try:\n    llm_query('q')\nexcept SubQueryError:\n    print('gave up')")
        with anyio.fail_after(10):
            while not list(traces.glob("*.jsonl")) or "pause_cancelled" not in next(traces.glob("*.jsonl")).read_text():
                await anyio.sleep(0.05)
    _, _, events = _trace(traces)
    assert [e["type"] for e in events] == ["exec_python", "pause_cancelled"]
    assert "--pause-timeout" in events[1]["reason"] and events[1]["result"]["stdout"] == "gave up\n"


async def test_a_trace_dir_that_cannot_be_written_stops_the_file_not_the_tools(make_client, tmp_path: Path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    async with make_client("legacy", trace_dir=blocked / "traces") as client:
        assert (await call(client, "exec_python", code="print(1)"))["stdout"] == "1\n"
        assert (await call(client, "exec_python", code="print(2)"))["stdout"] == "2\n"
        shown = (await client.call_tool("show_trace", {})).content[0].text
    assert "2 tool calls" in shown  # the session still keeps its trajectory
    assert sum("stopped writing the trace" in r.getMessage() for r in caplog.records) == 1
