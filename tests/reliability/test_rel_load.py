"""Load: many concurrent streamable-HTTP sessions against one real ``rlm-mcp --http`` server.

Every session loads its own context, keeps a variable, waits until all the others hold theirs
(so all workers are alive at once), then reads back values derived from its own data only.
Half the clients speak protocol 2025-11-25 (a session per Mcp-Session-Id), half 2026-07-28 (a
session per handle the server minted, passed back as ``session``). RSS of the server plus its
workers is sampled from /proc the whole time; when the clients have closed, the workers of the
2025-11-25 sessions must be reaped (their DELETE ends the session), and those of the handles,
which no client closes, only at --idle-timeout or shutdown.

CI runs 20 sessions; ``RLM_LOAD_SESSIONS=100`` runs the full load. The figures are printed (run
with ``-s`` to see them).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

import anyio
from mcp import Client

from support import call, gone, http_server, tree_rss, wait_for, worker_pid

SESSIONS = int(os.environ.get("RLM_LOAD_SESSIONS", "20"))
# Per-worker RSS is ~20-30 MB; the server's own grows a little per session. Generous, but a leak
# of a context copy per session, or a worker that is never reaped, shows.
BUDGET_PER_SESSION = 64 * 1024 * 1024
BUDGET_BASE = 256 * 1024 * 1024

_WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _context(i: int) -> tuple[str, str]:
    rng = random.Random(i)
    token = f"SECRET-{i:03d}-{rng.getrandbits(64):016x}"
    body = "\n".join(" ".join(rng.choices(_WORDS, k=12)) for _ in range(400 + i))
    return token, f"owner {token}\n{body}\nend {token}\n"


class _Sampler:
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


async def test_many_concurrent_http_sessions_each_see_only_their_own_data():
    n = SESSIONS
    with http_server("--exec-timeout", "120", "--max-concurrency", "4", "--max-sessions", str(n),
                     "--max-workers", str(n)) as server:
        idle_rss = tree_rss(server.pid)
        all_loaded = anyio.Event()
        loaded = 0
        held_workers: list[int] = []
        latencies: list[float] = []
        answered: dict[int, bool] = {}
        pids: dict[int, int] = {}
        legacy = {i for i in range(n) if i % 2 == 0}

        async def session(i: int) -> None:
            nonlocal loaded
            token, text = _context(i)
            mode = "legacy" if i in legacy else "auto"
            async with Client(server.url, mode=mode, read_timeout_seconds=180) as client:
                handle = (await call(client, "load_context", text=text, name=f"ctx{i}"))["session"]
                # A 2025-11-25 client may omit the handle; a 2026-07-28 one must pass it.
                mine = {} if i in legacy else {"session": handle}
                run = await call(client, "exec_python", code=f"mine = {token!r}\nlength = len(contexts['ctx{i}'])",
                                 **mine)
                assert run["status"] == "ok" and run["session"] == handle, run
                pids[i] = (await call(client, "rlm_status", **mine))["worker"]["pid"]
                loaded += 1
                if loaded == n:
                    held_workers.extend(server.workers())
                    all_loaded.set()
                with anyio.fail_after(240):
                    await all_loaded.wait()
                # Now every session holds a worker: read back, derived from this session's data only.
                started = time.monotonic()
                run = await call(client, "exec_python", **mine, code=(
                    "import hashlib\n"
                    f"doc = contexts['ctx{i}']\n"
                    "digest = hashlib.sha256(doc.encode()).hexdigest()\n"
                    "print(sorted(contexts), mine, SHOW_VARS())\n"
                    "FINAL(digest + ' ' + str(length) + ' ' + doc.splitlines()[0] + ' ' + context[-30:])"
                ))
                latencies.append(time.monotonic() - started)
                assert run["status"] == "ok", run
                expected = hashlib.sha256(text.encode()).hexdigest()
                assert run["final"] == f"{expected} {len(text)} owner {token} {text[-30:]}"
                assert f"['ctx{i}']" in run["stdout"] and token in run["stdout"]
                seen = run["stdout"] + run["final"] + str(await call(client, "list_contexts", **mine))
                seen += (await call(client, "get_variable", name="mine", **mine))["text"]
                others = [j for j in range(n) if j != i and f"SECRET-{j:03d}-" in seen]
                assert not others, f"session {i} saw data of sessions {others}"
                answered[i] = True

        with _Sampler(server.pid) as sampler:
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(session, i)
            took = time.monotonic() - started
            kept = {pids[i] for i in range(n) if i not in legacy}
            with anyio.fail_after(60):
                reaped = await wait_for(lambda: server.workers() == kept, 60,
                                        f"the 2025-11-25 sessions' workers to be reaped (left: {server.workers()})")
            after_rss = tree_rss(server.pid)

        assert len(answered) == n and all(answered.values())
        assert len(set(pids.values())) == n, "two sessions shared a worker"
        assert set(pids.values()) <= set(held_workers) and len(held_workers) == n
        assert all(gone(pids[i]) for i in legacy)
        peak = sampler.peak
        mb = 1024 * 1024
        print(
            f"\nload: {n} concurrent HTTP sessions ({len(legacy)} on 2025-11-25, {n - len(legacy)} on 2026-07-28 "
            f"with handles) in {took:.1f} s; all {n} workers alive at once; "
            f"read-back latency median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms; RSS server+workers idle {idle_rss / mb:.0f} MB, "
            f"peak {peak / mb:.0f} MB ({(peak - idle_rss) / n / mb:.1f} MB per session, "
            f"{len(sampler.samples)} samples), after close {after_rss / mb:.0f} MB; "
            f"the 2025-11-25 workers reaped {reaped:.1f} s after the clients closed"
        )
        assert peak < BUDGET_BASE + n * BUDGET_PER_SESSION, f"peak RSS {peak / mb:.0f} MB for {n} sessions"


async def test_idle_timeout_stops_an_idle_sessions_worker_over_http():
    with http_server("--idle-timeout", "1") as server:
        async with Client(server.url, mode="legacy") as client:
            await call(client, "load_context", text="idle data")
            pid = await worker_pid(client)
            assert server.workers() == {pid}
            took = await wait_for(lambda: gone(pid), 10, "the idle worker to be stopped")
            assert server.workers() == set()
        print(f"\nidle worker stopped {took:.1f} s after its last use (--idle-timeout 1)")


async def test_idle_timeout_keeps_the_contexts_of_an_in_memory_session(make_client):
    """Stdio-like sessions survive their idle worker: the next call starts one with the contexts."""
    async with make_client(idle_timeout=0.5) as client:
        await call(client, "load_context", text="kept across idleness")
        pid = await worker_pid(client)
        await wait_for(lambda: gone(pid), 10, "the idle worker to be stopped")
        status = await call(client, "rlm_status")
        assert status["worker"]["running"] is False and status["contexts"][0]["chars"] == 20
        run = await call(client, "exec_python", code="FINAL(context.upper())")
        assert run["final"] == "KEPT ACROSS IDLENESS"
