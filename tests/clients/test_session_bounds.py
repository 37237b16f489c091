"""Bounds on sessions and workers (issue 11): --max-sessions, --max-workers (least recently used
idle worker first, contexts kept), --idle-timeout ends minted sessions. Clients on protocol
2026-07-28 never close their sessions, so these bounds are all that keeps a server from filling up.

Every test runs real clients against a real ``rlm-mcp --http`` process.
"""

from __future__ import annotations

import anyio
from mcp import Client

from support import call, call_raw, gone, http_server, wait_for


async def test_max_sessions_refuses_a_new_session_with_what_to_do_and_empty_ones_make_room_first():
    with http_server("--max-sessions", "2") as server:
        async with Client(server.url) as client:
            a = (await call(client, "load_context", text="first user's"))["session"]
            empty = (await call(client, "list_contexts"))["session"]  # a call without a handle, never back
            b = (await call(client, "load_context", text="second user's"))["session"]  # the empty one made room
            is_error, text = await call_raw(client, "load_context", text="third user's")
            assert is_error and "--max-sessions" in text and "`session`" in text
            is_error, text = await call_raw(client, "list_contexts", session=empty)
            assert is_error and "gone" in text
            # The sessions that hold something are untouched, and still reachable by their handles.
            assert (await call(client, "peek", session=a))["text"] == "first user's"
            assert (await call(client, "peek", session=b))["text"] == "second user's"
        # A 2025-11-25 client arriving now gets the same error from tools; listing resources still works.
        async with Client(server.url, mode="legacy") as late:
            assert [r for r in (await late.list_resources()).resources if r.uri.startswith("context://")] == []
            is_error, text = await call_raw(late, "list_contexts")
            assert is_error and "--max-sessions" in text


async def test_max_workers_stops_the_least_recently_used_idle_worker_and_keeps_its_contexts():
    with http_server("--max-workers", "2") as server:
        async with Client(server.url) as client:
            handles, pids = [], []
            for i in range(3):
                handle = (await call(client, "load_context", text=f"context {i}"))["session"]
                await call(client, "exec_python", code=f"v = {i}", session=handle)
                handles.append(handle)
                pids.append((await call(client, "rlm_status", session=handle))["worker"]["pid"])
                assert len([p for p in pids if not gone(p)]) <= 2
            # (Children of the server that are not workers, such as token counters, come and go.)
            await wait_for(lambda: gone(pids[0]), 10, "the least recently used worker to stop")
            assert not gone(pids[1]) and not gone(pids[2])
            first, second, third = handles
            status = await call(client, "rlm_status", session=first)
            assert status["worker"]["running"] is False and status["contexts"][0]["name"] == "context"
            assert status["workers"] == {"running": 2, "max": 2}
            # The first session's next call gets a fresh worker with its context; its variable
            # is gone and the result says so. The least recently used worker now is the second's.
            second_pid = (await call(client, "rlm_status", session=second))["worker"]["pid"]
            third_pid = (await call(client, "rlm_status", session=third))["worker"]["pid"]
            run = await call(client, "exec_python", code="print(context)", session=first)
            assert run["stdout"] == "context 0\n"
            assert (await call(client, "rlm_status", session=first))["variables"] == []
            assert any("--max-workers" in note and "variables" in note for note in run["notes"]), run
            await wait_for(lambda: gone(second_pid), 10, "the least recently used worker to stop")
            assert not gone(third_pid)
            assert (await call(client, "exec_python", code="print(v)", session=third))["stdout"] == "2\n"


async def test_a_worker_running_code_is_never_stopped_to_make_room():
    with http_server("--max-workers", "1") as server:
        async with Client(server.url, read_timeout_seconds=120) as busy, Client(server.url) as waiting:
            handle = (await call(busy, "load_context", text="busy"))["session"]
            result: dict = {}

            async def long_run() -> None:
                result.update(await call(busy, "exec_python", session=handle,
                                         code="n = 0\nfor i in range(3_000_000):\n    n = n + i\nFINAL(str(n))"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_run)
                await wait_for(lambda: bool(server.workers()), 10, "the first worker to run")
                await anyio.sleep(0.3)
                other = await call(waiting, "exec_python", code="FINAL('second')")
            assert result["status"] == "ok" and result["final"] == str(sum(range(3_000_000)))
            assert other["final"] == "second"


async def test_an_idle_minted_session_ends_with_its_worker_and_files(tmp_path):
    with http_server("--idle-timeout", "1", env={"TMPDIR": str(tmp_path)}) as server:
        async with Client(server.url) as client:
            handle = (await call(client, "load_context", text="short-lived"))["session"]
            pid = (await call(client, "rlm_status", session=handle))["worker"]["pid"]
            assert list(tmp_path.glob("rlm-contexts-*/*")), "the context is not on disk where expected"
            await wait_for(lambda: gone(pid), 10, "the idle session's worker to stop")
            await wait_for(lambda: not list(tmp_path.glob("rlm-contexts-*")), 10, "the session's files to go")
            is_error, text = await call_raw(client, "peek", session=handle)
            assert is_error and "gone" in text and "--idle-timeout" in text


async def test_a_connected_2025_client_keeps_its_contexts_past_the_idle_timeout_only_its_worker_stops():
    with http_server("--idle-timeout", "1") as server:
        async with Client(server.url, mode="legacy") as client:  # it holds its GET stream open
            first = await call(client, "load_context", text="kept while connected")
            pid = (await call(client, "rlm_status"))["worker"]["pid"]
            await wait_for(lambda: gone(pid), 10, "the idle worker to stop")
            await anyio.sleep(1.5)  # idle past the timeout again, with no worker
            again = await call(client, "peek")
            assert again["text"] == "kept while connected" and again["session"] == first["session"]
