"""What a session does at the edges of loading: code before any load, code sent while a load is
still running, and a second load under a name already in use."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from rlm_mcp.config import Settings
from rlm_mcp.errors import RlmError
from rlm_mcp.session import RlmSession
from support import call


@pytest.fixture
async def session(tmp_path: Path):
    s = RlmSession(Settings(roots=(tmp_path,), exec_timeout=20))
    try:
        yield s
    finally:
        await s.aclose()


async def test_context_before_any_load_is_an_error_that_says_to_load(session: RlmSession):
    run = await session.exec_python("print(len(context))")
    assert run["status"] == "error"
    assert "NameError" in run["error"] and "load_context" in run["error"]
    # contexts is there, empty, so code can check for itself.
    assert (await session.exec_python("print(len(contexts))"))["stdout"] == "0\n"
    await session.load_context(text="now loaded")
    assert (await session.exec_python("print(context)"))["stdout"] == "now loaded\n"


async def test_code_sent_during_a_load_waits_for_it(session: RlmSession):
    """The load is held inside its own progress report (a real load's reading and counting take
    as long as the client likes to wait); the code must not run until it has finished."""
    text = "x" * 100_000
    held, release = anyio.Event(), anyio.Event()

    async def slow_progress(progress: float, total: float | None, message: str) -> None:
        held.set()
        await release.wait()

    runs: list[dict] = []

    async def run_code() -> None:
        runs.append(await session.exec_python("print(len(context))"))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: session.load_context(text=text, progress=slow_progress))
            await held.wait()
            tg.start_soon(run_code)
            await anyio.sleep(0.5)
            assert runs == [], "the code ran before the load had finished"
            release.set()
    assert runs[0]["status"] == "ok" and runs[0]["stdout"] == f"{len(text)}\n"


async def test_a_failed_load_does_not_keep_code_waiting(session: RlmSession):
    with pytest.raises(RlmError):
        await session.load_context(path="does-not-exist.txt")
    with anyio.fail_after(10):
        run = await session.exec_python("print(1)")
    assert run["stdout"] == "1\n"


async def test_a_second_load_under_the_same_name_says_it_replaced_the_first(make_client):
    async with make_client() as client:
        first = await call(client, "load_context", text="first text")
        assert first["replaced"] is False and first["appended"] is False
        second = await call(client, "load_context", text="second")
        assert second["replaced"] is True
        assert any("replaced the context 'context'" in w and "10 characters" in w for w in second["warnings"])
        other = await call(client, "load_context", text="other", name="other")
        assert other["replaced"] is False
        appended = await call(client, "load_context", text=" more", append=True)
        assert appended["replaced"] is False and appended["appended"] is True
        run = await call(client, "exec_python", code="print(context)")
        assert run["stdout"] == "second more\n"
