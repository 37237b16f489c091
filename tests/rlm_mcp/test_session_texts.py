"""Where a session's texts live: in the worker's memory and on disk, never in the server's.

The server answers peek, search and sub_query slices by asking the worker, so these tests check
that those answers are the text's, also while the worker is paused on a sub-query and after an
idle worker was stopped, and that loading leaves no copy of the text in the server process."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.session import RlmSession
from support import call, gone, wait_for, worker_pid


def _document(lines: int) -> str:
    return "".join(f"{i:07d} {'needle' if i % 997 == 0 else 'hay'} " + "w" * 990 + "\n" for i in range(lines))


async def test_loading_leaves_no_copy_of_the_text_in_the_server(tmp_path: Path):
    text = _document(30_000)  # ~30 MB
    (tmp_path / "doc.txt").write_text(text)
    session = RlmSession(Settings(roots=(tmp_path,), exec_timeout=20))
    try:
        await session.sandbox()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            summary = await session.load_context(path="doc.txt")
            await session.contexts.get("context").ready()  # the line index is built in the background
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert summary["chars"] == len(text) and summary["lines"] == 30_000
        # The line index (8 bytes a line) and the previews, not 30 MB.
        assert kept < 2_000_000, f"the server kept {kept:,} bytes after loading {len(text):,} chars"
        peeked = await session.peek(start=15_000, end=15_002, unit="lines")
        assert peeked["text"] == "".join(text.splitlines(keepends=True)[15_000:15_002])
        found = await session.search("needle", max_results=5, window=8)
        assert [m["line"] for m in found["matches"]] == [0, 997, 1994, 2991, 3988]
        assert [m["text"] for m in found["matches"]] == [text[m["start"] - 8 : m["end"] + 8] if m["start"] >= 8
                                                         else text[: m["end"] + 8] for m in found["matches"]]
        assert await session.sub_query_prompt("Q", "context", 8, 14) == "Q\n\n--- context[8:14] ---\nneedle"
    finally:
        await session.aclose()


async def test_appends_are_read_back_whole_after_the_worker_is_replaced(tmp_path: Path):
    session = RlmSession(Settings(roots=(tmp_path,), exec_timeout=20))
    try:
        await session.load_context(text="one\ntwo")
        await session.load_context(text=" and more\nthree\n", append=True)
        await session.stop_worker()  # what the idle reaper does
        out = await session.peek(start=1, unit="lines")
        assert out["text"] == "two and more\nthree\n" and out["total"] == 3
        run = await session.exec_python("FINAL(context)")
        assert run["final"] == "one\ntwo and more\nthree\n"
    finally:
        await session.aclose()


async def test_peek_and_search_answer_while_an_execution_waits_on_the_host(make_client):
    async with make_client("legacy", sub_llm="host") as client:
        await call(client, "load_context", text="alpha\nbeta\ngamma\n")
        paused = await call(client, "exec_python", code="r = llm_query('summarise')\nFINAL(r)")
        assert paused["status"] == "paused"
        with anyio.fail_after(10):
            assert (await call(client, "peek", start=1, end=2, unit="lines"))["text"] == "beta\n"
            assert (await call(client, "search", pattern="gam+a"))["matches"][0]["line"] == 2
        done = await call(client, "answer_sub_queries", answers={paused["pending"][0]["id"]: "a summary"})
        assert done["final"] == "a summary"


async def test_an_idle_stopped_worker_is_started_again_for_a_peek(make_client):
    async with make_client(idle_timeout=0.3) as client:
        await call(client, "load_context", text="kept on disk meanwhile\n")
        pid = await worker_pid(client)
        await wait_for(lambda: gone(pid), 10, "the idle worker to be stopped")
        assert (await call(client, "peek", start=5, end=12))["text"] == "on disk"
        assert (await call(client, "search", pattern="disk"))["matches"][0]["start"] == 8


async def test_concurrent_appends_each_extend_the_whole_text(tmp_path: Path):
    session = RlmSession(Settings(roots=(tmp_path,), exec_timeout=20))
    try:
        await session.load_context(text="start\n")
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(lambda i=i: session.load_context(text=f"piece {i}\n", append=True))
        run = await session.exec_python("FINAL(context)")
        whole = run["final"]
        assert sorted(whole.splitlines()) == sorted(["start"] + [f"piece {i}" for i in range(6)])
        out = await session.peek(start=0, unit="lines")
        assert out["text"] == whole and out["total"] == 7
        found = await session.search("piece 3")
        assert found["matches"][0]["line"] == whole.splitlines().index("piece 3")
    finally:
        await session.aclose()


async def test_peek_does_not_wait_for_running_code_nor_start_a_worker(tmp_path: Path):
    session = RlmSession(Settings(roots=(tmp_path,), exec_timeout=20))
    try:
        await session.load_context(text="line one\nline two\n")
        peeked_at: list[float] = []

        async def peek_meanwhile() -> None:
            await anyio.sleep(0.3)
            out = await session.peek(start=1, unit="lines")
            peeked_at.append(anyio.current_time())
            assert out["text"] == "line two\n"

        async with anyio.create_task_group() as tg:
            tg.start_soon(peek_meanwhile)
            run = await session.exec_python("n = 0\nfor i in range(30_000_000):\n    n += 1\nprint(n)")
            ran_until = anyio.current_time()
        assert run["stdout"] == "30000000\n"
        # Answered while the code was still running, not after it.
        assert peeked_at and peeked_at[0] < ran_until - 0.2, (peeked_at, ran_until)
        await session.stop_worker()
        assert (await session.peek(start=0, end=4))["text"] == "line"
        assert not session.worker_running  # a slice needs no worker
    finally:
        await session.aclose()
