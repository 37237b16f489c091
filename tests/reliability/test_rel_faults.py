"""Faults: each ends in a clear error, the session goes on with its contexts, the result names the
variables that were lost, and no worker process is left behind (orphan or zombie).

In-memory servers run in this process, so their workers are children of the test process; the
``no_leaks`` fixture compares those before and after each test. HTTP servers are real ``rlm-mcp``
processes whose children are counted through /proc.
"""

from __future__ import annotations

import json

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from conftest import free_port, rlm_mcp_command
from support import (
    FakeOpenAI,
    call,
    call_raw,
    children,
    descendants,
    gone,
    http_server,
    serve_fake_openai,
    wait_for,
    worker_pid,
)

CONTEXT = "alpha beta gamma\n" * 1000
SPIN = "i = 0\nwhile True:\n    i = i + 1\n"
# A C-level loop that never returns to the interpreter, so SIGALRM cannot stop it.
UNINTERRUPTIBLE = "s = sum(range(10**13))"


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """No child of this process (sandbox workers of in-memory servers) outlives the test."""
    before = children(os.getpid())
    yield
    deadline = time.monotonic() + 10
    while not children(os.getpid()) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children(os.getpid()) <= before, f"leaked children: {children(os.getpid()) - before}"


async def _context_intact(client: Client) -> dict:
    run = await call(client, "exec_python", code="FINAL(str(len(context)) + ' ' + str(context.count('beta')))")
    assert run["status"] == "ok", run
    assert run["final"] == f"{len(CONTEXT)} 1000"
    return run


async def _session_with_vars(client: Client) -> int:
    await call(client, "load_context", text=CONTEXT)
    run = await call(client, "exec_python", code="kept = 41\nnotes = ['a', 'b']")
    assert run["status"] == "ok"
    return await worker_pid(client)


# -- the worker dies ------------------------------------------------------------------------------


async def test_worker_sigkilled_between_calls_is_replaced_and_the_code_runs(make_client, no_leaks):
    """Nothing was running when it died: the next exec_python runs its code in a fresh worker and
    says what was lost, instead of reporting an execution lost."""
    async with make_client() as client:
        old = await _session_with_vars(client)
        os.kill(old, signal.SIGKILL)
        await wait_for(lambda: gone(old), 10, "the killed worker to be gone")
        run = await call(client, "exec_python", code="FINAL(str(len(context)) + ' ' + str(context.count('beta')))")
        assert run["status"] == "ok", run
        assert run["final"] == f"{len(CONTEXT)} 1000"
        assert run["restarted"] is True and sorted(run["variables_lost"]) == ["kept", "notes"]
        assert any("had stopped since the last call" in note for note in run["notes"])
        assert await worker_pid(client) != old
        assert (await call(client, "rlm_status"))["worker"]["restarts"] == 1


async def test_worker_sigkilled_mid_execution_is_replaced_and_names_the_lost_variables(make_client, no_leaks):
    async with make_client(exec_timeout=30) as client:
        old = await _session_with_vars(client)

        async def kill_soon() -> None:
            await anyio.sleep(0.5)
            os.kill(old, signal.SIGKILL)

        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_soon)
            with anyio.fail_after(15):
                run = await call(client, "exec_python", code=SPIN)
        assert run["status"] == "error"
        assert run["error"].startswith("WorkerCrashed:") and "SIGKILL" in run["error"]
        assert run["restarted"] is True and sorted(run["variables_lost"]) == ["kept", "notes"]
        assert "kept" in run["error"] and "notes" in run["error"]
        assert gone(old)
        new = await worker_pid(client)
        assert new != old
        await _context_intact(client)
        assert (await call(client, "rlm_status"))["worker"]["restarts"] == 1


async def test_allocating_past_the_memory_cap_is_a_memory_error_and_variables_stay(make_client, no_leaks):
    async with make_client(memory_mb=160) as client:
        pid = await _session_with_vars(client)
        run = await call(client, "exec_python", code="big = []\nwhile True:\n    big.append('x' * 1000000)")
        assert run["status"] == "error" and "MemoryError" in run["error"] and "--memory-mb" in run["error"]
        run = await call(client, "exec_python", code="huge = 'y' * (1024 * 1024 * 1024)")
        assert run["status"] == "error" and "MemoryError" in run["error"]
        assert await worker_pid(client) == pid  # the same worker, nothing lost
        run = await call(client, "exec_python", code="big = None\nFINAL(str(kept + 1))")
        assert run["final"] == "42"
        await _context_intact(client)


async def test_a_final_answer_near_the_memory_cap_comes_back_cut_and_kept(make_client, no_leaks):
    """A 90 MB final answer under a 200 MB cap: the worker sends only the output cap's worth of it
    with its length (it used to run out of memory serialising the whole answer into the result),
    and the rest is read in slices from the same worker."""
    async with make_client(memory_mb=200) as client:
        pid = await _session_with_vars(client)
        run = await call(client, "exec_python", code="x = 'a' * (90 * 1024 * 1024)\nFINAL(x)")
        assert run["status"] == "ok", run["error"]
        assert run["final_chars"] == 90 * 1024 * 1024 and len(run["final"]) < 25_000
        assert not run.get("restarted")
        assert await worker_pid(client) == pid
        tail = await call(client, "get_variable", name="FINAL", start=90 * 1024 * 1024 - 3)
        assert "aaa" in json.dumps(tail)
        run = await call(client, "exec_python", code="x = None\nFINAL(str(kept) + ' ' + str(len(notes)))")
        assert run["final"] == "41 2"
        await _context_intact(client)


async def test_code_past_the_wall_clock_limit_is_stopped_and_keeps_variables(make_client, no_leaks):
    async with make_client(exec_timeout=1.0) as client:
        pid = await _session_with_vars(client)
        started = time.monotonic()
        run = await call(client, "exec_python", code=SPIN)
        assert time.monotonic() - started < 5
        assert run["status"] == "error" and run["error"].startswith("TimeoutError:")
        assert "--exec-timeout" in run["error"]
        assert not run.get("restarted") and await worker_pid(client) == pid
        assert (await call(client, "exec_python", code="FINAL(str(kept))"))["final"] == "41"


async def test_code_that_ignores_the_time_limit_gets_its_worker_killed(make_client, no_leaks):
    async with make_client(exec_timeout=1.0) as client:
        old = await _session_with_vars(client)
        started = time.monotonic()
        run = await call(client, "exec_python", code=UNINTERRUPTIBLE)
        took = time.monotonic() - started
        assert 1.0 <= took < 8, took  # exec_timeout + the host's kill grace (2 s)
        assert run["status"] == "error" and run["error"].startswith("ExecTimeout:")
        assert run["restarted"] is True and sorted(run["variables_lost"]) == ["kept", "notes"]
        assert gone(old) and await worker_pid(client) != old
        await _context_intact(client)


async def test_the_cpu_rlimit_backstop_kills_a_spinning_worker_when_the_host_does_not(no_leaks):
    """With the host's wall-clock kill pushed far away, RLIMIT_CPU (2 x exec_timeout + the margin,
    in CPU seconds) ends the worker, and the host reports it as a CPU limit and restarts with the
    contexts. The margin (10 s in service) is cut to 2 s here: the mechanism is the same."""
    from sandbox import Limits, SandboxSession

    limits = Limits(exec_timeout=0.5, kill_grace=60, cpu_margin=2)
    async with SandboxSession(limits) as sandbox:
        await sandbox.load_context("context", CONTEXT)
        await sandbox.execute("kept = 1")
        # ~3 s of CPU; on a shared 2-core machine the wall time can double or worse. The host's own
        # kill would come only after 60 s, so an end before that is the backstop's doing.
        with anyio.fail_after(58):
            result = await sandbox.execute(UNINTERRUPTIBLE)
        assert result.status == "error" and result.restarted and result.variables_lost == ["kept"]
        assert "CPU time limit" in result.error
        again = await sandbox.execute("FINAL(str(len(context)))")
        assert again.final == str(len(CONTEXT))


# -- lifecycle races -------------------------------------------------------------------------------


async def test_the_idle_reaper_does_not_stop_a_worker_that_is_running_code(make_client, no_leaks):
    """A long execution is not idleness (regression: the reaper killed it, then the cancelled
    execution started a replacement worker that nobody owned)."""
    long_run = ("import datetime\nt0 = datetime.datetime.now()\nn = 0\n"
                "while (datetime.datetime.now() - t0).total_seconds() < 2.0:\n    n = n + 1\nFINAL('done')")
    async with make_client(idle_timeout=0.3, exec_timeout=30) as client:
        pid = await _session_with_vars(client)
        run = await call(client, "exec_python", code=long_run)
        assert run["status"] == "ok" and run["final"] == "done", run
        assert await worker_pid(client) == pid
        # Idle afterwards, it is stopped; the next call gets a fresh worker with the contexts.
        await wait_for(lambda: gone(pid), 10, "the idle worker to be stopped")
        await _context_intact(client)


async def test_closing_a_sandbox_under_a_running_execution_starts_no_new_worker(no_leaks):
    from sandbox import Limits, SandboxClosed, SandboxSession

    sandbox = SandboxSession(Limits(exec_timeout=30))
    await sandbox.start()
    await sandbox.load_context("context", CONTEXT)
    pid = sandbox.pid
    outcome: list[object] = []

    async def run() -> None:
        try:
            outcome.append(await sandbox.execute(SPIN))
        except SandboxClosed as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(0.5)
        await sandbox.aclose()
    assert isinstance(outcome[0], SandboxClosed), outcome
    assert gone(pid) and sandbox.pid is None


async def test_a_call_cancelled_while_its_worker_starts_leaves_no_worker(no_leaks):
    from rlm_mcp.config import Settings
    from rlm_mcp.session import RlmSession

    before = children(os.getpid())
    # A fine sweep: the spawn itself takes a few milliseconds, and a cancellation landing inside it
    # once lost the handle of a process that already existed.
    for delay in (0.0, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.05, 0.1, 0.2):
        session = RlmSession(Settings())
        with anyio.move_on_after(delay):
            await session.sandbox()
        await session.aclose()
        leaked = [p for p in children(os.getpid()) - before if _is_worker(p)]
        assert not leaked, f"cancelled after {delay} s, the worker {leaked} was left running"


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"sandbox.worker" in f.read()
    except OSError:
        return False


# -- sub-LLM failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["down", "slow", "garbage"])
async def test_a_failing_provider_is_a_sub_query_error_and_the_session_goes_on(make_client, no_leaks, fault):
    # down: connections refused, retried once after a ~0.5 s backoff (--llm-retries 1), then failed;
    # slow: every attempt outlives the 0.5 s per-call timeout, so the 2 x 0.5 + 5 s deadline ends it.
    timeout = {"down": 3.0, "slow": 0.5, "garbage": 0.5}[fault]
    fake = FakeOpenAI(latency=3 if fault == "slow" else 0, garbage=fault == "garbage")
    expected = {"down": "cannot reach", "slow": "took longer than 0.5 s",
                "garbage": "not an OpenAI chat completion"}[fault]
    with serve_fake_openai(fake) as served:
        url = f"http://127.0.0.1:{free_port()}/v1" if fault == "down" else served.url
        async with make_client(sub_llm="provider", llm_base_url=url, sub_query_timeout=timeout,
                               llm_retries=1 if fault == "down" else 4, exec_timeout=30) as client:
            pid = await _session_with_vars(client)
            # The code sees SubQueryError and may catch it; the root's own sub_query is a tool error.
            code = ("try:\n    llm_query('what is in it?')\nexcept SubQueryError as e:\n    caught = str(e)\n"
                    "FINAL(caught + ' / ' + str(kept))")
            results: dict[str, object] = {}

            async def run_exec() -> None:
                results["exec"] = await call(client, "exec_python", code=code)

            async def run_sub_query() -> None:
                results["sub_query"] = await call_raw(client, "sub_query", prompt="and now?")

            started = time.monotonic()
            with anyio.fail_after(timeout * 2 + 5 + 10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run_exec)
                    tg.start_soon(run_sub_query)
            assert time.monotonic() - started < timeout * 2 + 5 + 3  # bounded by the router's deadline
            run = results["exec"]
            assert run["status"] == "ok" and run["final"].endswith(" / 41"), run
            assert expected in run["final"] and "Traceback" not in run["final"]
            is_error, text = results["sub_query"]
            assert is_error and expected in text and "Traceback" not in text
            if fault == "garbage":  # uncaught, it is the execution's error, with its line
                run = await call(client, "exec_python", code="a = 1\nb = llm_query('x')")
                assert run["status"] == "error" and run["error"].startswith("Line 2: SubQueryError:")
                assert expected in run["error"]
            assert await worker_pid(client) == pid
            await _context_intact(client)


async def test_a_client_that_refuses_sampling_makes_llm_query_fail_cleanly(make_client, no_leaks):
    async def refuse(context, params):  # noqa: ANN001, ANN202
        return types.ErrorData(code=-1, message="User rejected the sampling request")

    async with make_client(sampling_callback=refuse) as client:
        pid = await _session_with_vars(client)
        run = await call(client, "exec_python", code="a = llm_query('hello?')")
        assert run["status"] == "error" and "SubQueryError" in run["error"] and "rejected" in run["error"]
        run = await call(client, "exec_python", code="rs = llm_query_batched(['a', 'b'])\nFINAL(rs[0])")
        assert run["final"].startswith("Error:") and "rejected" in run["final"]
        is_error, text = await call_raw(client, "sub_query", prompt="hi")
        assert is_error and "rejected" in text
        assert await worker_pid(client) == pid
        await _context_intact(client)


# -- the client goes away, or gives up --------------------------------------------------------------


async def test_cancelling_a_running_exec_replaces_the_worker_and_the_session_stays_usable(make_client, no_leaks):
    async with make_client(exec_timeout=30) as client:
        old = await _session_with_vars(client)
        with anyio.move_on_after(0.8) as scope:
            await call(client, "exec_python", code=SPIN)
        assert scope.cancelled_caught
        await wait_for(lambda: gone(old), 10, "the cancelled execution's worker to be reaped")
        await _context_intact(client)
        new = await worker_pid(client)
        assert new != old and new in descendants(os.getpid())


async def test_cancelling_while_a_sampling_callback_is_blocked_frees_the_worker(make_client, no_leaks):
    entered = anyio.Event()
    release = anyio.Event()

    async def stuck(context, params):  # noqa: ANN001, ANN202
        entered.set()
        await release.wait()
        return types.CreateMessageResult(role="assistant", model="m",
                                         content=types.TextContent(type="text", text="late"))

    async with make_client(sampling_callback=stuck, exec_timeout=30) as client:
        old = await _session_with_vars(client)
        async with anyio.create_task_group() as tg:
            async def run_it() -> None:
                await call(client, "exec_python", code="a = llm_query('will you answer?')")

            tg.start_soon(run_it)
            with anyio.fail_after(10):
                await entered.wait()
            tg.cancel_scope.cancel()
        await wait_for(lambda: gone(old), 10, "the blocked execution's worker to be reaped")
        release.set()
        await _context_intact(client)


async def test_a_client_that_leaves_mid_execution_leaves_no_worker(make_client, no_leaks):
    pids: list[int] = []
    with anyio.move_on_after(1.5) as scope:
        async with make_client(exec_timeout=30) as client:
            pids.append(await _session_with_vars(client))
            await call(client, "exec_python", code=SPIN)
    assert scope.cancelled_caught
    await wait_for(lambda: gone(pids[0]), 10, "the worker of the departed client to be reaped")


async def test_a_client_that_leaves_during_a_host_mode_pause_leaves_no_worker(make_client, no_leaks):
    async with make_client(sub_llm="host") as client:
        pid = await _session_with_vars(client)
        run = await call(client, "exec_python", code="a = llm_query('question one')")
        assert run["status"] == "paused" and run["pending"][0]["prompt"] == "question one"
    await wait_for(lambda: gone(pid), 10, "the paused worker to be reaped")


# -- the same over a real HTTP server, where the server outlives its clients ----------------------


async def test_http_client_that_vanishes_mid_execution_does_not_leak_its_worker():
    """No DELETE arrives; the SDK ends the session after --idle-timeout, which must kill its
    worker, and the idle reaper must not spawn a replacement for the running execution."""
    with http_server("--idle-timeout", "2", "--exec-timeout", "30") as server:
        assert server.workers() == set()
        pids: list[int] = []
        # The client vanishes 0.5 s into the execution, however long its worker took to start (a
        # fixed deadline around the whole block once fired before the session was even set up).
        with anyio.CancelScope() as vanish:
            async with Client(streamable_http_client(server.url, terminate_on_close=False), mode="legacy") as c:
                pids.append(await _session_with_vars(c))
                vanish.deadline = anyio.current_time() + 0.5
                await call(c, "exec_python", code=SPIN)
        assert vanish.cancelled_caught and pids
        await wait_for(lambda: gone(pids[0]), 15, "the vanished client's worker to be reaped")
        await wait_for(lambda: server.workers() == set(), 15,
                       f"the server to have no workers (has {server.workers()})")
        await anyio.sleep(3)  # nothing comes back later (no respawn by a cancelled execution)
        assert server.workers() == set(), server.log()[-3000:]


async def test_http_cancel_keeps_the_session_and_closing_it_reaps_the_worker():
    with http_server("--exec-timeout", "30") as server:
        async with Client(server.url, mode="legacy") as client:
            old = await _session_with_vars(client)
            with anyio.move_on_after(1):
                await call(client, "exec_python", code=SPIN)
            await wait_for(lambda: gone(old), 10, "the cancelled execution's worker to be reaped")
            await _context_intact(client)
            new = await worker_pid(client)
            assert server.workers() == {new}
        await wait_for(lambda: server.workers() == set(), 15, "the closed session's worker to be reaped")


@pytest.mark.parametrize("goodbye", ["delete", "vanish"])
async def test_http_client_that_leaves_a_paused_execution_leaves_no_worker(goodbye):
    with http_server("--sub-llm", "host", "--idle-timeout", "2") as server:
        transport = streamable_http_client(server.url, terminate_on_close=goodbye == "delete")
        async with Client(transport, mode="legacy") as client:
            pid = await _session_with_vars(client)
            run = await call(client, "exec_python", code="a = llm_query('question?')")
            assert run["status"] == "paused"
            assert server.workers() == {pid}
        await wait_for(lambda: server.workers() == set(), 15, "the paused session's worker to be reaped")
        assert gone(pid)


@pytest.mark.parametrize("goodbye", ["delete", "vanish"])
async def test_http_client_that_leaves_while_its_sampling_callback_is_blocked_leaves_no_worker(goodbye):
    entered = anyio.Event()

    async def stuck(context, params):  # noqa: ANN001, ANN202
        entered.set()
        await anyio.sleep_forever()

    with http_server("--idle-timeout", "2", "--exec-timeout", "30") as server:
        pids: list[int] = []
        transport = streamable_http_client(server.url, terminate_on_close=goodbye == "delete")
        with anyio.move_on_after(20) as outer:
            async with Client(transport, mode="legacy", sampling_callback=stuck) as client:
                pids.append(await _session_with_vars(client))
                async with anyio.create_task_group() as tg:
                    async def run_it() -> None:
                        await call(client, "exec_python", code="a = llm_query('are you there?')")

                    tg.start_soon(run_it)
                    with anyio.fail_after(10):
                        await entered.wait()
                    tg.cancel_scope.cancel()  # the user gives up; then the client goes away
        assert not outer.cancelled_caught
        await wait_for(lambda: gone(pids[0]), 15, "the blocked execution's worker to be reaped")
        # The cancelled execution's worker is replaced at once (the session may still be in use);
        # the replacement goes when the session ends: on DELETE, or after --idle-timeout.
        deadline = time.monotonic() + 20
        while True:
            await wait_for(lambda: server.workers() == set(), 20, f"no workers left (has {server.workers()})")
            await anyio.sleep(3)  # longer than --idle-timeout: nothing comes back
            if server.workers() == set():
                break
            assert time.monotonic() < deadline, f"workers keep coming back: {server.workers()}"


async def test_a_killed_server_leaves_no_orphan_worker(tmp_path: Path):
    """SIGKILL the server itself mid-execution: the worker notices (its pipe closes, its own alarm
    fires) and exits instead of spinning on as an orphan. The folder with the session's contexts
    stays behind (nothing runs on SIGKILL) until the next start of rlm-mcp removes it."""
    spill = tmp_path / "tmp"
    spill.mkdir()
    env = {"TMPDIR": str(spill)}
    params = StdioServerParameters(command=rlm_mcp_command(), args=["--root", str(tmp_path), "--exec-timeout", "2"],
                                   env=env)
    pid_holder: list[int] = []
    server_pids: list[int] = []
    with anyio.move_on_after(20):
        async with Client(params, mode="legacy") as client:
            pid_holder.append(await _session_with_vars(client))
            server_pids.extend(p for p in children(os.getpid()) if _is_rlm_mcp(p))
            assert len(server_pids) == 1

            async def kill_server() -> None:
                await anyio.sleep(0.5)
                os.kill(server_pids[0], signal.SIGKILL)

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_server)
                try:
                    await client.call_tool("exec_python", {"code": SPIN})
                except Exception:  # noqa: BLE001 - the connection breaks, as it should
                    pass
                tg.cancel_scope.cancel()
    worker = pid_holder[0]
    await wait_for(lambda: gone(worker), 15, "the orphaned worker to exit on its own")
    left = list(spill.glob(f"rlm-contexts-{server_pids[0]}-*"))
    assert len(left) == 1 and any(left[0].iterdir()), list(spill.iterdir())
    # The next server start (here one that finds stdin closed and exits) sweeps it away.
    subprocess.run([rlm_mcp_command(), "--root", str(tmp_path)], stdin=subprocess.DEVNULL, capture_output=True,
                   env={**os.environ, **env}, timeout=60, check=True)
    assert not left[0].exists()


def _is_rlm_mcp(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"rlm-mcp" in f.read()
    except OSError:
        return False


def test_rel_support_sees_zombies_as_leaks():
    """The leak detector itself: an unreaped child is a child."""
    proc = subprocess.Popen(["/bin/true"])
    deadline = time.monotonic() + 5
    while not _zombie(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.pid in children(os.getpid()) and not gone(proc.pid)
    proc.wait()
    assert gone(proc.pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
