"""Sandbox overhead, through the sandbox's own async API (no MCP).

Figures, all measured in one run:

a. analysis ratio: the same CPU-bound source (regex ``finditer`` collecting groups, word counts in a
   dict over every line, a 300k-iteration pure-Python loop, a sort with a key function) over a
   deterministic 5 MB log-like text, run in the sandbox (RestrictedPython-compiled, guarded, in the
   worker process) vs a plain ``exec`` of the same source in this process with globals
   ``{"context": text}``. Median wall time of each, runs interleaved; the ratio is sandbox / plain
   (target <= 1.5). Both print a checksum of their result, which must be equal. The sandbox time
   is the whole ``execute()`` call as a caller sees it: RestrictedPython compile, frames over the
   pipe, the variable summary, as well as the code itself.
b. round trip: ``execute("x = 1")``, median (target <= 20 ms): the fixed cost of one execution.
c. context-size independence: ``execute("x = len(context)")`` with a 1 KB context vs a 200 MB
   one (50 MB with ``--quick``) (two sessions, runs interleaved), median of each; ratio big / small (target <= 1.2).
   Shows that nothing per execution (namespace restore, variable diff) scales with the contexts.
d. load time: ``load_context`` of the 200 MB text into a running worker (encode, pipe, decode
   in the worker), median, also as MB/s.
e. the walls' cost (``sandbox/walls.py``): a worker behind every wall the machine gives (bubblewrap
   namespaces, seccomp, hard rlimits) vs one started with ``isolation="off"``, in the same run:
   the round trip of ``execute("x = 1")`` (runs interleaved; target <= 1.5), the 5 MB analysis
   (target <= 1.2), and the worker's start (paid once per session).
"""

from __future__ import annotations

import contextlib
import io
import time
from typing import Any

import anyio

from ._common import MB, Report, fmt_s, log_text, median

__all__ = ["ANALYSIS", "run"]

ANALYSIS = r"""
import re
import hashlib
pat = re.compile(r"(\d\d):(\d\d):\d\d (INFO|WARN|ERROR|DEBUG) \[(\w+)\] .*? id=(\d+)")
by_level = {}
by_component = {}
id_sum = 0
for m in pat.finditer(context):
    level = m.group(3)
    by_level[level] = by_level.get(level, 0) + 1
    comp = m.group(4)
    by_component[comp] = by_component.get(comp, 0) + 1
    id_sum += int(m.group(5))
counts = {}
for line in context.split("\n"):
    for w in line.split():
        counts[w] = counts.get(w, 0) + 1
top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
acc = 0
for i in range(300000):
    acc += i % 7
summary = f"{sorted(by_level.items())} {sorted(by_component.items())} {id_sum} {len(counts)} {top} {acc}"
print(hashlib.sha256(summary.encode()).hexdigest()[:16])
"""


def _plain(text: str) -> tuple[float, str]:
    """The baseline: compile + exec of the same source in this process, stdout captured."""
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        exec(compile(ANALYSIS, "<plain>", "exec"), {"context": text})
    return time.perf_counter() - t0, out.getvalue().strip()


async def _sandboxed(session: Any, code: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = await session.execute(code)
    elapsed = time.perf_counter() - t0
    if result.status != "ok":
        raise RuntimeError(f"sandbox execution failed: {result.error}")
    return elapsed, result


async def _main(quick: bool) -> None:
    from sandbox import Limits, SandboxSession

    analysis_runs = 5 if quick else 11
    trivial_runs = 200 if quick else 1000
    len_runs = 50 if quick else 200
    load_runs = 2 if quick else 5
    big_size = 50 * MB if quick else 200 * MB

    report = Report(
        "sandbox",
        quick,
        __doc__.split("\n\n", 1)[1] if __doc__ else "",
    )
    report.start()
    limits = Limits(exec_timeout=120)

    # a. the same analysis in the sandbox and in plain exec --------------------------------
    text = log_text(5 * MB)
    async with SandboxSession(limits) as s:
        await s.load_context("context", text)
        await _sandboxed(s, ANALYSIS)  # warm-up: imports, allocator, caches
        _plain(text)
        sandbox_times, plain_times = [], []
        sums = set()
        for _ in range(analysis_runs):
            elapsed, result = await _sandboxed(s, ANALYSIS)
            sandbox_times.append(elapsed)
            sums.add(("sandbox", result.stdout.strip()))
            elapsed, out = _plain(text)
            plain_times.append(elapsed)
            sums.add(("plain", out))
        sb, pl = median(sandbox_times), median(plain_times)
        checks = {kind: value for kind, value in sums}
        same = len({v for _, v in sums}) == 1
        report.row("a. analysis of 5 MB: sandbox / plain exec", f"{sb / pl:.2f}x", "<= 1.2",
                   f"median of {analysis_runs}: sandbox {fmt_s(sb)}, plain {fmt_s(pl)}")
        report.row("a. checksums (sandbox, plain)", f"{checks.get('sandbox')}, {checks.get('plain')}", "equal",
                   "equal" if same else "DIFFERENT")
        if not same:
            report.note(f"the sandbox and plain exec disagree: {sorted(sums)}")

        # b. trivial round trip --------------------------------------------------------------
        for _ in range(20):
            await _sandboxed(s, "x = 1")
        trivial = [(await _sandboxed(s, "x = 1"))[0] for _ in range(trivial_runs)]
        trivial.sort()
        report.row("b. execute('x = 1') round trip", fmt_s(median(trivial)), "<= 20 ms",
                   f"median of {trivial_runs}; p10 {fmt_s(trivial[len(trivial) // 10])}, "
                   f"p90 {fmt_s(trivial[len(trivial) * 9 // 10])}")
    del text

    # c./d. context size: 1 KB vs big, and the load itself ----------------------------------
    big = log_text(big_size)
    small = big[:1000]
    async with SandboxSession(limits) as small_s, SandboxSession(limits) as big_s:
        await small_s.load_context("context", small)
        loads = []
        for _ in range(load_runs):
            t0 = time.perf_counter()
            await big_s.load_context("context", big)
            loads.append(time.perf_counter() - t0)
        load = median(loads)
        code = "x = len(context)"
        for session in (small_s, big_s):
            for _ in range(10):
                await _sandboxed(session, code)
        small_times, big_times = [], []
        for _ in range(len_runs):
            small_times.append((await _sandboxed(small_s, code))[0])
            big_times.append((await _sandboxed(big_s, code))[0])
        sm, bg = median(small_times), median(big_times)
        check = await big_s.execute("print(x)")
        report.row(f"c. execute('x = len(context)'): {big_size // MB} MB / 1 KB context", f"{bg / sm:.2f}x", "<= 1.2",
                   f"median of {len_runs}: {fmt_s(bg)} vs {fmt_s(sm)}; x = {check.stdout.strip()}")
        report.row(f"d. load_context of {big_size // MB} MB into the worker", fmt_s(load), "",
                   f"median of {load_runs}; {big_size / MB / load:,.0f} MB/s")
    del big, small
    await _walls(report, limits, trivial_runs, analysis_runs)
    report.write()


async def _walls(report: Report, limits: Any, trivial_runs: int, analysis_runs: int) -> None:
    from sandbox import Isolation, SandboxSession
    from sandbox.walls import missing

    walled_starts, bare_starts = [], []
    for _ in range(5):
        for isolation, times in ((Isolation("auto"), walled_starts), (Isolation("off"), bare_starts)):
            t0 = time.perf_counter()
            async with SandboxSession(limits, isolation=isolation):
                times.append(time.perf_counter() - t0)
    text = log_text(5 * MB)
    async with SandboxSession(limits) as walled, SandboxSession(limits, isolation=Isolation("off")) as bare:
        down = missing(walled.walls)
        for session in (walled, bare):
            await session.load_context("context", text)
            await _sandboxed(session, ANALYSIS)
            for _ in range(20):
                await _sandboxed(session, "x = 1")
        w_trip, b_trip = [], []
        for _ in range(trivial_runs):
            w_trip.append((await _sandboxed(walled, "x = 1"))[0])
            b_trip.append((await _sandboxed(bare, "x = 1"))[0])
        w_an, b_an = [], []
        for _ in range(analysis_runs):
            w_an.append((await _sandboxed(walled, ANALYSIS))[0])
            b_an.append((await _sandboxed(bare, ANALYSIS))[0])
    walls_note = "every wall up" if not down else f"walls down: {', '.join(down)}"
    report.row("e. round trip, walls / no walls", f"{median(w_trip) / median(b_trip):.2f}x", "<= 1.5",
               f"median of {trivial_runs}: {fmt_s(median(w_trip))} vs {fmt_s(median(b_trip))}; {walls_note}")
    report.row("e. analysis of 5 MB, walls / no walls", f"{median(w_an) / median(b_an):.2f}x", "<= 1.2",
               f"median of {analysis_runs}: {fmt_s(median(w_an))} vs {fmt_s(median(b_an))}")
    report.row("e. worker start, walls / no walls", f"{median(walled_starts) / median(bare_starts):.2f}x", "",
               f"median of 5: {fmt_s(median(walled_starts))} vs {fmt_s(median(bare_starts))} (once per session)")


def run(quick: bool = False) -> int:
    anyio.run(_main, quick)
    return 0

