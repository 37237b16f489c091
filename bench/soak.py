"""Soak: the real ``rlm-mcp --http`` server under a steady stream of short sessions, for N minutes.

Setup: ``python -m rlm_mcp --http`` on a free loopback port (nothing else is contacted). Four
client loops run side by side; each cycle opens a streamable-HTTP session (SDK ``Client``,
protocol 2025-11-25), loads its own ~100 KB context (deterministic log-like text, a different
seed per cycle), runs three ``exec_python`` calls whose answers are checked against the same
computation done here, one ``peek`` and one ``search``, and closes the session (which must kill
and reap its worker). Every second the RSS of the server plus all its children is summed from
/proc, with the number of children.

Figures per minute: cycles, errors, median cycle and exec latency, median RSS (all, and the server
process alone), and the machine's load average (latency on a shared 2-core machine follows it;
memory does not). Steadiness: the last
minute's medians over the first minute's (RSS target <= 1.25, latency target <= 1.5), the RSS
trend after the first 30 s (MB per minute, least squares), the peak; at the end, that no worker
is left once the last session has closed.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import anyio

from ._common import MB, Report, children, fmt_bytes, fmt_s, free_port, log_text, process_tree, rss_bytes, stop_process

__all__ = ["run"]

LOOPS = 4
CONTEXT_CHARS = 100_000


@dataclass
class _Stats:
    started: float
    cycles: list[tuple[float, float]] = field(default_factory=list)  # (end time, latency)
    execs: list[tuple[float, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (time, bytes, children)
    server_rss: list[tuple[float, int]] = field(default_factory=list)  # the server process alone
    load: list[tuple[float, float]] = field(default_factory=list)  # 1-minute load average


def _tree_rss(pid: int) -> int:
    return sum(rss_bytes(p) for p in process_tree(pid))


async def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("rlm-mcp --http exited during start-up")
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.aclose()
            return
        except OSError:
            await anyio.sleep(0.1)
    raise RuntimeError("rlm-mcp --http did not start within 30 s")


async def _cycle(url: str, seed: int, stats: _Stats) -> None:
    from mcp import Client

    text = log_text(CONTEXT_CHARS, seed=seed)
    started = time.monotonic()
    async with Client(url, mode="legacy", read_timeout_seconds=120) as client:
        async def tool(name: str, **args: object) -> dict:
            result = await client.call_tool(name, args)
            if result.is_error:
                raise RuntimeError(f"{name}: {result.content[0].text[:200]}")
            return result.structured_content

        await tool("load_context", text=text)
        checks = [
            ("FINAL(str(context.count('ERROR')))", str(text.count("ERROR"))),
            ("import re\nids = re.findall(r'id=(\\d+)', context)\nFINAL(str(len(ids)))",
             str(len(re.findall(r"id=(\d+)", text)))),
            ("lines = context.splitlines()\nFINAL(lines[-1][:40])", text.splitlines()[-1][:40]),
        ]
        for code, expected in checks:
            t0 = time.monotonic()
            run = await tool("exec_python", code=code)
            stats.execs.append((time.monotonic(), time.monotonic() - t0))
            if run.get("final") != expected:
                raise RuntimeError(f"wrong answer: {run.get('final')!r} != {expected!r}")
        await tool("peek", start=1000, end=3000)
        await tool("search", pattern=r"ERROR \[db\]", max_results=5)
    stats.cycles.append((time.monotonic(), time.monotonic() - started))


async def _loop(url: str, index: int, deadline: float, stats: _Stats) -> None:
    seed = index * 1_000_000
    while time.monotonic() < deadline:
        seed += 1
        try:
            with anyio.fail_after(180):
                await _cycle(url, seed, stats)
        except Exception as exc:  # noqa: BLE001 - a soak counts failures and goes on
            stats.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"[:300]))
            await anyio.sleep(0.5)


async def _sampler(pid: int, stats: _Stats, stop: anyio.Event) -> None:
    while not stop.is_set():
        now = time.monotonic()
        stats.rss.append((now, _tree_rss(pid), len(children(pid))))
        stats.server_rss.append((now, rss_bytes(pid)))
        stats.load.append((now, os.getloadavg()[0]))
        with anyio.move_on_after(1.0):
            await stop.wait()


def _slope_mb_per_min(points: list[tuple[float, int, int]]) -> float:
    if len(points) < 3:
        return 0.0
    xs = [p[0] / 60 for p in points]
    ys = [p[1] / MB for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


async def _main(minutes: float, quick: bool) -> int:
    report = Report("soak", quick, __doc__.split("\n\n", 1)[1] if __doc__ else "")
    report.start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlm_mcp", "--http", "--host", "127.0.0.1", "--port", str(port),
             "--root", tmp, "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            await _wait_ready(port, proc)
            url = f"http://127.0.0.1:{port}/mcp"
            idle = _tree_rss(proc.pid)
            stats = _Stats(started=time.monotonic())
            deadline = stats.started + minutes * 60
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_sampler, proc.pid, stats, stop)
                async with anyio.create_task_group() as loops:
                    for i in range(LOOPS):
                        loops.start_soon(_loop, url, i, deadline, stats)
                stop.set()
            # Every session is closed: its worker must go.
            reap_deadline = time.monotonic() + 30
            while children(proc.pid) and time.monotonic() < reap_deadline:
                await anyio.sleep(0.1)
            left = children(proc.pid)
            after = _tree_rss(proc.pid)
        finally:
            stop_process(proc)

    t0 = stats.started
    n_minutes = max(1, int(-(-minutes // 1)))
    report.row("duration", f"{minutes:g} min, {LOOPS} client loops, {CONTEXT_CHARS // 1000} KB context each")
    report.row("server + workers RSS at start (idle)", fmt_bytes(idle))
    per_minute = []
    for m in range(n_minutes):
        lo, hi = t0 + 60 * m, t0 + 60 * (m + 1)
        lat = [v for t, v in stats.cycles if lo <= t < hi]
        ex = [v for t, v in stats.execs if lo <= t < hi]
        rss = [v for t, v, _ in stats.rss if lo <= t < hi]
        errs = [e for t, e in stats.errors if lo <= t < hi]
        kids = max((c for t, _, c in stats.rss if lo <= t < hi), default=0)
        server = [v for t, v in stats.server_rss if lo <= t < hi]
        load = [v for t, v in stats.load if lo <= t < hi]
        if not lat or not rss:
            continue
        per_minute.append((m + 1, statistics.median(lat), statistics.median(rss)))
        report.row(f"minute {m + 1}",
                   f"{len(lat)} cycles, {len(errs)} errors, cycle median {fmt_s(statistics.median(lat))}, "
                   f"exec median {fmt_s(statistics.median(ex)) if ex else '-'}, RSS median {fmt_bytes(statistics.median(rss))}, "
                   f"server alone {fmt_bytes(statistics.median(server))}, max workers {kids}, "
                   f"load average {statistics.median(load):.1f}")
    ok = True
    if len(per_minute) >= 2:
        first, last = per_minute[0], per_minute[-1]
        rss_ratio = last[2] / first[2]
        lat_ratio = last[1] / first[1]
        rss_ok, lat_ok = rss_ratio <= 1.25, lat_ratio <= 1.5
        ok = ok and rss_ok and lat_ok
        report.row(f"RSS median, minute {last[0]} / minute {first[0]}", f"{rss_ratio:.2f}", "<= 1.25",
                   "holds steady" if rss_ok else "GROWS")
        report.row(f"cycle latency median, minute {last[0]} / minute {first[0]}", f"{lat_ratio:.2f}", "<= 1.5",
                   "holds steady" if lat_ok else "SLOWS DOWN")
    else:
        report.note("run at least 2 minutes for the first/last minute ratios")
    warm = [p for p in stats.rss if p[0] - t0 >= 30]
    report.row("RSS trend after the first 30 s", f"{_slope_mb_per_min([(t - t0, v, c) for t, v, c in warm]):+.1f} MB/min")
    report.row("RSS peak", fmt_bytes(max((v for _, v, _ in stats.rss), default=0)))
    report.row("cycles / errors", f"{len(stats.cycles)} / {len(stats.errors)}", "0 errors")
    report.row("workers left after the last session closed", str(len(left)), "0")
    report.row("server RSS after the last session closed", fmt_bytes(after))
    for _, error in stats.errors[:5]:
        report.note(f"error: {error}")
    ok = ok and not stats.errors and not left
    report.row("verdict", "steady" if ok else "NOT steady")
    report.write()
    return 0 if ok else 1


def run(quick: bool = False, minutes: float | None = None) -> int:
    """``python -m bench soak [--minutes N]`` (default 2; ``--quick``: 1)."""
    minutes = minutes if minutes is not None else (1.0 if quick else 2.0)
    if minutes <= 0:
        raise SystemExit("--minutes must be positive")
    os.environ.setdefault("RLM_LOG_LEVEL", "WARNING")
    return anyio.run(_main, minutes, quick)
