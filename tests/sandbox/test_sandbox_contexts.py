"""Contexts on disk and in the worker: the host keeps no text in memory, reads slices and
searches through the worker, and gives every fresh worker its contexts back from disk."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from sandbox import (
    PAUSE,
    ContextMissing,
    Limits,
    SandboxError,
    SandboxSession,
    SearchTimeout,
    SpillStore,
    SubQueryRequest,
)
from sandbox.textops import compile_pattern, find_matches
from support import gone

LIMITS = Limits(exec_timeout=5.0, kill_grace=1.0, memory_margin_mb=256, max_output_chars=2_000)
ODD = "ascii \u00e9t\u00e9 \u4e2d\u6587 \U0001f600 lone\ud800surrogate\n" * 3


# -- the store -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "plain ascii\n", ODD])
def test_a_spilled_text_reads_back_byte_for_byte(tmp_path: Path, text: str) -> None:
    store = SpillStore(tmp_path)
    part = store.write(text)
    assert part.chars == len(text)
    assert part.nbytes == len(text.encode("utf-8", "surrogatepass")) == part.path.stat().st_size
    store.commit("c", part, append=False)
    data = b"".join(SpillStore.chunks(store.get("c")))  # type: ignore[arg-type]
    assert data.decode("utf-8", "surrogatepass") == text


def test_commit_replaces_or_appends_and_close_removes_everything(tmp_path: Path) -> None:
    store = SpillStore(tmp_path)
    store.commit("c", store.write("one\n"), append=False)
    first = store.get("c")
    store.commit("c", store.write("two\n"), append=False)
    assert first is not None and not first.path.exists()  # the replaced file is gone
    store.commit("c", store.write(ODD), append=True)
    merged = store.get("c")
    assert merged is not None and merged.chars == len("two\n" + ODD)
    assert merged.path.read_bytes().decode("utf-8", "surrogatepass") == "two\n" + ODD
    assert merged.str_size >= len("two\n" + ODD) * 4  # the emoji makes every char 4 bytes wide
    folder = store.directory
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert sorted(p.name for p in folder.iterdir()) == [merged.path.name]  # parts were consumed
    store.close()
    assert not folder.exists() and store.get("c") is None


def test_slices_read_from_disk_are_the_texts_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random appends of ASCII and wider text, random slices: disk and string always agree
    (marks every 7 chars here, so every kind of boundary gets crossed)."""
    import random

    from sandbox import spill

    monkeypatch.setattr(spill, "STEP", 7)
    store = SpillStore(tmp_path)
    rng = random.Random(7)
    wide = ["a", "\n", "\u00e9", "\u4e2d", "\U0001f600", "\ud800", "\udc80"]
    for _ in range(200):
        parts = ["".join(rng.choice(wide if rng.random() < 0.5 else wide[:2]) for _ in range(rng.randint(0, 40)))
                 for _ in range(rng.randint(1, 4))]
        store.commit("c", store.write(parts[0]), append=False)
        for part in parts[1:]:
            store.commit("c", store.write(part), append=True)
        whole = "".join(parts)
        for _ in range(20):
            a, b = rng.randint(-3, len(whole) + 3), rng.randint(-3, len(whole) + 3)
            assert store.read("c", a, b) == whole[a:b], (parts, a, b)
    assert store.read("missing", 0, 1) is None
    store.close()


def test_find_matches_stops_after_the_hits_it_returns() -> None:
    text = "x" * 1000 + "needle" + "y" * 1000 + "needle" + "z" * 10
    found = find_matches(text, compile_pattern("needle", True, False), 1, 5, 1000, 5.0)
    assert [(h.start, h.end, h.lo, h.text) for h in found.hits] == [(1000, 1006, 995, "xxxxxneedleyyyyy")]
    assert found.truncated and found.next_start == 2006 and found.scanned == 2012
    literal = find_matches("a.b axb", compile_pattern("a.b", False, False), 10, 0, 100, 5.0)
    assert [h.start for h in literal.hits] == [0]


# -- through a worker ----------------------------------------------------------------------------


async def test_reads_come_from_disk_and_searches_from_the_worker() -> None:
    async with SandboxSession(LIMITS) as s:
        await s.load_context("context", ODD)
        assert await s.read_context("context", 6, 11) == ODD[6:11]
        assert await s.read_context("context", 0, 10**9) == ODD  # clamped like a slice
        found = await s.find_in_context("context", "lone.surrogate", window=3)
        assert [h.start for h in found.hits] == [i for i in range(len(ODD)) if ODD.startswith("lone", i)]
        assert found.hits[0].text == ODD[found.hits[0].lo : found.hits[0].end + 3]
        with pytest.raises(ContextMissing):
            await s.read_context("nope", 0, 1)


async def test_a_catastrophic_pattern_times_out_in_the_worker_and_the_worker_goes_on() -> None:
    async with SandboxSession(LIMITS) as s:
        await s.load_context("context", "x" * 5000)
        with anyio.fail_after(30), pytest.raises(SearchTimeout):
            await s.find_in_context("context", "(x+x+)+y", timeout=0.5)
        assert (await s.execute("print(len(context))")).stdout == "5000\n"


async def test_a_paused_execution_still_serves_reads_and_searches() -> None:
    async def pause(request: SubQueryRequest) -> object:
        return PAUSE

    async with SandboxSession(LIMITS, on_sub_query=pause) as s:
        await s.load_context("context", "alpha\nbeta\n")
        paused = await s.execute("r = llm_query('q')\nprint(r)")
        assert paused.status == "paused"
        with anyio.fail_after(10):
            assert await s.read_context("context", 6, 10) == "beta"
            assert [h.start for h in (await s.find_in_context("context", "beta")).hits] == [6]
        done = await s.resume({paused.pending[0].id: "answer"})
        assert done.status == "ok" and done.stdout == "answer\n"


async def test_a_killed_worker_gets_every_context_back_from_disk() -> None:
    async with SandboxSession(LIMITS) as s:
        await s.load_context("context", "first\n")
        await s.load_context("context", ODD, append=True)
        await s.load_context("other", "B" * 100_000)
        pid = s.pid
        assert pid is not None
        await s.execute("kept = 1")
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(5):
            while not gone(pid):
                await anyio.sleep(0.01)
        # Killed while idle: nothing was running, so the next code runs in a fresh worker.
        result = await s.execute("print(len(context), len(contexts['other']), context == 'first\\n' + " + repr(ODD) + ")")
        assert result.status == "ok", result.error
        assert result.stdout == f"{len('first') + 1 + len(ODD)} 100000 True\n"
        assert result.restarted and result.variables_lost == ["kept"]
        assert "had stopped since the last call" in result.notes[0] and "SIGKILL" in result.notes[0]
        assert s.pid != pid


async def test_a_shared_store_outlives_a_session_and_fills_the_next(tmp_path: Path) -> None:
    """How the MCP server stops an idle worker without losing the client's contexts."""
    store = SpillStore(tmp_path)
    async with SandboxSession(LIMITS, store=store) as s:
        await s.load_context("context", "kept across workers")
    assert store.get("context") is not None and not store.closed
    async with SandboxSession(LIMITS, store=store) as s:
        assert (await s.execute("print(context)")).stdout == "kept across workers\n"
    store.close()


async def test_a_session_removes_its_own_files_on_close() -> None:
    s = SandboxSession(LIMITS)
    async with s:
        await s.load_context("context", "x" * 1000)
        folder = s.store.directory
        assert any(folder.iterdir())
    assert not folder.exists()


async def test_a_refused_load_leaves_no_file_and_the_previous_text(tmp_path: Path) -> None:
    store = SpillStore(tmp_path)
    async with SandboxSession(Limits(exec_timeout=5.0, memory_mb=200), store=store) as s:
        await s.load_context("context", "small")
        with pytest.raises(Exception, match="could not take|failed"):
            await s.load_context("context", "x" * 400_000_000)
        assert (await s.execute("print(context)")).stdout == "small\n"
    assert [p.name for p in store.directory.iterdir()] == [store.get("context").path.name]  # type: ignore[union-attr]
    store.close()


def test_sweep_removes_only_the_folders_of_dead_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    from sandbox import sweep_stale

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)  # exited and reaped: nobody has this pid now (or a stranger does)
    mine = SpillStore(tmp_path)
    mine.commit("c", mine.write("live"), append=False)
    dead = tmp_path / f"rlm-contexts-{dead_pid}-abc"
    dead.mkdir()
    (dead / "ctx-0.txt").write_text("left behind by a SIGKILL")
    unrelated = tmp_path / "rlm-contexts-notapid-x"
    unrelated.mkdir()
    removed = sweep_stale(tmp_path)
    alive = os.path.exists(f"/proc/{dead_pid}")  # pid reuse in between: then it must be kept
    assert removed == ([] if alive else [dead]) and dead.exists() == alive
    assert mine.directory.exists() and unrelated.exists()
    mine.close()


async def test_a_server_killed_with_sigkill_leaves_a_folder_the_next_start_removes(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    script = ("import anyio, os, sys\nfrom sandbox import SandboxSession\n"
              "async def main():\n    async with SandboxSession() as s:\n"
              "        await s.load_context('context', 'secret data')\n"
              "        print('loaded', s.pid, flush=True)\n        await anyio.sleep(60)\nanyio.run(main)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[2]), start_new_session=True)
    try:
        assert proc.stdout is not None
        word, worker = proc.stdout.readline().split()
        assert word == "loaded"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # The worker (its own process group) sees its pipe close and exits by itself.
        with anyio.fail_after(10):
            while os.path.exists(f"/proc/{worker}") and "zombie" not in _state(int(worker)):
                await anyio.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    left = list(tmp_path.glob("rlm-contexts-*"))
    assert len(left) == 1 and any(left[0].iterdir())
    from sandbox import sweep_stale

    assert sweep_stale(tmp_path) == left and not left[0].exists()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((line for line in f if line.startswith("State:")), "").lower()
    except OSError:
        return "gone"


def test_the_worker_boots_without_the_host_side_loaded() -> None:
    """Each worker pays for what it imports (100 sessions: 100 workers); the package's exports
    are lazy so that reaching sandbox.worker does not load anyio, the host or the regex engine."""
    import json
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    code = f"import json, sys; sys.path.insert(0, {root!r}); import sandbox.worker; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                                           check=True).stdout))
    assert not {"anyio", "regex", "sandbox.host", "sandbox.spill", "sandbox.textops", "mcp", "httpx"} & loaded


async def test_a_disk_that_refuses_the_context_is_a_clear_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    async with SandboxSession(LIMITS, store=SpillStore(not_a_folder)) as s:
        with pytest.raises(SandboxError, match="could not be written to disk.*TMPDIR"):
            await s.load_context("context", "text")
        assert (await s.execute("print(len(contexts))")).stdout == "0\n"


async def test_a_context_file_removed_from_disk_does_not_stop_the_next_worker(tmp_path: Path) -> None:
    store = SpillStore(tmp_path)
    async with SandboxSession(LIMITS, store=store) as s:
        await s.load_context("context", "kept")
        await s.load_context("other", "removed by a temp cleaner")
    store.get("other").path.unlink()  # type: ignore[union-attr]
    async with SandboxSession(LIMITS, store=store) as s:
        assert s.contexts_lost == ["other"] and s.context_names == ["context"]
        assert (await s.execute("print(sorted(contexts))")).stdout == "['context']\n"
    store.close()


def test_a_read_racing_a_replace_or_a_drop_gets_the_new_text_or_none(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads run on worker threads while peeks read: a file replaced or dropped under a reader
    must give the new text or 'no such context', never an error."""
    store = SpillStore(tmp_path)
    store.commit("c", store.write("old text"), append=False)
    old = store.get("c")
    store.commit("c", store.write("new text"), append=False)
    new = store.get("c")
    assert old is not None and new is not None and not old.path.exists()
    store._texts["c"] = old  # a reader took the entry just before the replace...
    real_read = SpillStore._read

    def replace_lands(spilled, start, end):  # ...which lands while it opens the old file
        store._texts["c"] = new
        return real_read(spilled, start, end)

    monkeypatch.setattr(SpillStore, "_read", staticmethod(replace_lands))
    assert store.read("c", 0, 3) == "new"
    monkeypatch.setattr(SpillStore, "_read", staticmethod(real_read))
    new.path.unlink()  # removed under us for good (a temp cleaner)
    assert store.read("c", 0, 3) is None
    store.close()


async def test_the_worker_refuses_bytes_that_are_not_ascii_under_an_ascii_header(tmp_path: Path) -> None:
    """A text said to be ASCII (as many chars as bytes) is read straight into a str; a block that
    is not ASCII after all is refused, and the worker keeps working with its other contexts."""
    import dataclasses

    store = SpillStore(tmp_path)
    async with SandboxSession(LIMITS, store=store) as session:
        await session.load_context("good", "plain text\n")
        part = store.write("x" * 2_000_000 + "\u00e9" * 10)
        lying = dataclasses.replace(part, chars=part.nbytes)  # what a corrupt copy would claim
        with pytest.raises(SandboxError):
            await session.load_context("bad", lying)
        result = await session.execute("print(sorted(contexts), contexts['good'])")
        assert result.stdout == "['good'] plain text\n\n"


def _open_inodes(pid: int) -> set[tuple[int, int]]:
    """(device, inode) of every file the process holds open, seen from outside it."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        held.add((st.st_dev, st.st_ino))
    return held


@pytest.mark.parametrize("text", ["plain ascii\n" * 1000, ODD * 100], ids=["ascii", "utf-8"])
async def test_the_worker_keeps_no_descriptor_of_a_context_file_it_was_handed(text: str) -> None:
    """Contexts arrive as an open file (SCM_RIGHTS); once read, the worker holds no descriptor of
    it, so code that got past the policy could neither reread it nor reopen it through /proc."""
    async with SandboxSession(LIMITS) as s:
        await s.load_context("context", text)
        await s.load_context("other", text)
        pid = s.pid
        assert pid is not None
        files = {(st.st_dev, st.st_ino) for st in (os.stat(p.path) for _, p in s.store.items())}
        assert len(files) == 2
        assert not files & _open_inodes(pid)
        assert (await s.execute("print(len(context), len(contexts['other']))")).stdout == f"{len(text)} {len(text)}\n"
