"""rlm-mcp side by side with the RLM REPLs people use today, in one run on the same machine and the
same contexts.

Peers, from PyPI into their own venv (``bench/.peers-venv``, created on first run):
``aleph-rlm`` (an MCP server that runs code in-process, on a thread, with AST checks and reduced
builtins), driven through ITS MCP server over stdio exactly as ours is (SDK ``Client``,
``mode="legacy"``); and the official ``rlms`` (``LocalREPL``, what ``RLM.completion`` builds: plain
``exec`` in the caller's process, no sandbox), driven through its Python API by a small driver in
the peers' python that times each call in-process. Ours is the ``rlm-mcp`` server over stdio, its
code in a separate, rlimited worker process compiled with RestrictedPython.

Contexts: deterministic log-like text (``log_text``) of ~1, 50 and 200 MB (``--quick``: 1 and 50),
with one needle line at 98%, written to a temp folder. For each size a fresh server (or driver) of
each peer is started, warmed up (a tiny load and a few executions), then measured, the peers
interleaved run by run so that machine noise hits all alike:

- load: ours ``load_context(path=)`` (the exact token count comes after it, in the background: the
  driver waits for it before going on, and the note says when it came), aleph ``load_file(path=)``,
  rlms ``open().read()`` + ``LocalREPL(context_payload=)``; median, first load and reloads. In the
  note: ``open().read()`` in the bench process.
- exec ``x = 1`` round trip: median. MCP round trips for ours and aleph; rlms has no transport.
- analysis: the same code in each REPL (regex per line, word counts in a dict, a sort, a 300k
  pure-Python loop) over the whole context; median; outputs must be equal. In the note: the same
  code under plain ``exec`` in the bench process.
- peek 2,000 chars at 75%: ours ``peek``, aleph ``peek_context``; rlms has no tool:
  ``print(context[a:b])`` in the REPL.
- search: a regex needle at 98% (one hit: a full scan) and ``ERROR \\[db\\]`` (first 20 hits):
  ours ``search``, aleph ``search_context``; rlms has no tool: ``re.finditer`` in the REPL
  collecting offset, line number and a window. The hits' line numbers must agree.
- memory: VmRSS of each peer's process tree (ours: server + worker), sampled every 20 ms: peak
  during the first load, and peak from the first load through the searches (reloads excluded).

Ratios are theirs / ours: above 1 means ours is faster (or smaller). Reading them: ours and aleph
pay an MCP round trip per call (about a millisecond, see the ping row) that rlms, a library called
in-process, does not, so on sub-millisecond operations rlms wins by construction; the "engine
alone" row shows the execution cost without any transport. Ours also counts tokens exactly after
loading, in a process of its own that is part of ours' tree while it runs (aleph estimates chars /
4, rlms does not count). Ours keeps one copy of a context in memory (the worker's, for code) and
one on disk (for peek, and for a fresh worker).
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ._common import MB, Report, RssSampler, fmt_bytes, fmt_s, log_text, median, timed
from .peers_drivers import Aleph, Ours, PeerError, Rlms, ensure_peers_venv, start_engine_driver

__all__ = ["ANALYSIS", "run"]

PEERS = ("ours", "aleph", "rlms")
NEEDLE = "NEEDLE-5d1e kind=needle order=424242"
RARE = r"NEEDLE-\w+ kind=needle order=(\d+)"
FREQUENT = r"ERROR \[db\]"

ANALYSIS = r"""
import re
pat = re.compile(r"(INFO|WARN|ERROR|DEBUG) \[(\w+)\]")
levels = {}
words = {}
n_lines = 0
for line in context.split("\n"):
    n_lines += 1
    m = pat.search(line)
    if m:
        key = m.group(1) + "/" + m.group(2)
        levels[key] = levels.get(key, 0) + 1
    for w in line.split(" ")[3:-1]:
        words[w] = words.get(w, 0) + 1
top = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
acc = 0
for i in range(300000):
    acc += i * i % 7
print(n_lines, len(levels), len(words), top, acc)
"""


@dataclass
class _Reps:
    load: int
    exec: int
    analysis: int
    peek: int
    search: int


def _reps(size_mb: int, quick: bool) -> _Reps:
    if size_mb <= 1:
        return _Reps(load=3 if quick else 5, exec=200 if quick else 300, analysis=5 if quick else 9, peek=100, search=5)
    if size_mb <= 50:
        return _Reps(load=2 if quick else 3, exec=100 if quick else 200, analysis=3 if quick else 5, peek=100,
                     search=3 if quick else 5)
    return _Reps(load=2, exec=200, analysis=3, peek=100, search=3)


@dataclass
class _Row:
    """One line of the table: a value (seconds or bytes) or an error per peer."""

    context: str
    measure: str
    kind: str  # "time" | "bytes"
    values: dict[str, float | str] = field(default_factory=dict)
    note: str = ""

    def cell(self, peer: str) -> str:
        value = self.values.get(peer, "n/a")
        if isinstance(value, str):
            return value
        return fmt_s(value) if self.kind == "time" else fmt_bytes(value)

    def ratio(self, peer: str) -> str:
        theirs, ours = self.values.get(peer), self.values.get("ours")
        if isinstance(theirs, float) and isinstance(ours, float) and ours > 0:
            return f"{theirs / ours:.2f}x"
        return "—"

    def line(self) -> str:
        return (f"| {self.context} | {self.measure} | {self.cell('ours')} | {self.cell('aleph')} | "
                f"{self.cell('rlms')} | {self.ratio('aleph')} | {self.ratio('rlms')} | {self.note} |")


class _PeersReport(Report):
    """The shared report's header, notes and file naming, with a side-by-side table."""

    HEAD = ("| context | measure | ours (rlm-mcp) | aleph | rlms | aleph / ours | rlms / ours | how, notes |\n"
            "|---|---|---|---|---|---|---|---|")

    def __init__(self, quick: bool, intro: str) -> None:
        super().__init__("peers", quick, intro)
        self.table: list[_Row] = []

    def add(self, row: _Row) -> None:
        self.table.append(row)
        cells = "  |  ".join(f"{p} {row.cell(p)}" for p in PEERS)
        print(f"{row.context} {row.measure}: {cells}  |  aleph/ours {row.ratio('aleph')}, "
              f"rlms/ours {row.ratio('rlms')}" + (f"  ({row.note})" if row.note else ""), flush=True)

    def markdown(self) -> str:
        return "\n".join([self.HEAD] + [row.line() for row in self.table])

    def write(self) -> Path:
        self.rows = []  # the side-by-side table replaces the shared (figure, value) rows
        path = super().write()
        text = path.read_text()
        head = "| figure | value | target | note |\n|---|---|---|---|\n"
        if head in text:
            text = text.replace(head, self.markdown() + "\n", 1)
        else:  # the shared report changed its layout: the table still goes in, at the end
            text += "\n" + self.markdown() + "\n"
        path.write_text(text)
        return path

    def verdict(self) -> None:
        """One note per peer: in how many timing rows ours is faster, and where it is not."""
        for peer in PEERS[1:]:
            rows = [r for r in self.table if r.kind == "time" and r.ratio(peer) != "—"]
            slower = [f"{r.context} {r.measure} ({r.ratio(peer)})" for r in rows
                      if float(r.ratio(peer)[:-1]) < 1.0]
            self.note(f"ours faster than {peer} in {len(rows) - len(slower)} of {len(rows)} timing rows"
                      + (f"; {peer} faster in: {'; '.join(slower)}" if slower else ""))


def _with_needle(text: str) -> str:
    cut = text.index("\n", int(len(text) * 0.98)) + 1
    return text[:cut] + f"2024-05-28 12:00:00 INFO [bench] {NEEDLE}\n" + text[cut:]


def _plain_analysis(text: str) -> tuple[float, str]:
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        exec(compile(ANALYSIS, "<plain>", "exec"), {"context": text})  # noqa: S102 - our own constant
    return time.perf_counter() - t0, out.getvalue()


async def _each(peers: dict[str, Any], failed: dict[str, str], op: str, *args: Any) -> dict[str, tuple[float, Any]]:
    """Run one operation on every live peer, in order; a failure is recorded and that peer skipped."""
    done: dict[str, tuple[float, Any]] = {}
    for key, peer in peers.items():
        if key in failed:
            continue
        try:
            done[key] = await getattr(peer, op)(*args)
        except PeerError as exc:
            failed[key] = f"error: {str(exc)[:200]}".replace("|", "/").replace("\n", " ")
    return done


class _Series:
    """Times per peer over repeated runs; failures are kept as the cell's text."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {p: [] for p in PEERS}
        self.failed: dict[str, str] = {}

    def add(self, done: dict[str, tuple[float, Any]]) -> None:
        for key, (t, _) in done.items():
            self.times[key].append(t)

    def values(self, live: dict[str, Any], not_loaded: dict[str, str]) -> dict[str, float | str]:
        out: dict[str, float | str] = {}
        for key in PEERS:
            if key in not_loaded:
                out[key] = not_loaded[key]
            elif key in self.failed:
                out[key] = self.failed[key]
            elif self.times[key]:
                out[key] = median(self.times[key])
        return out


async def _size(report: _PeersReport, folder: Path, size_mb: int, quick: bool, first: bool) -> None:
    reps = _reps(size_mb, quick)
    label = f"{size_mb} MB"
    text = _with_needle(log_text(size_mb * MB, seed=11))
    path = folder / f"context-{size_mb}mb.log"
    path.write_text(text, encoding="utf-8", newline="")
    path.read_bytes()  # into the page cache for everyone
    report.note(f"{label}: {len(text):,} chars, {text.count(chr(10)) + 1:,} lines")
    failed: dict[str, str] = {}

    async with AsyncExitStack() as stack:
        peers: dict[str, Any] = {"ours": Ours(folder), "aleph": Aleph(folder), "rlms": Rlms(folder)}
        for key, peer in list(peers.items()):
            try:
                await peer.start(stack)
            except Exception as exc:  # noqa: BLE001 - a peer that cannot start is a cell, not a crash
                failed[key] = f"error at start: {type(exc).__name__}: {str(exc)[:200]}"
                del peers[key]
        samplers = {key: stack.enter_context(RssSampler(peer.pid)) for key, peer in peers.items()}
        await anyio.sleep(0.5)
        for sampler in samplers.values():
            sampler.mark("idle")
        if first:
            await anyio.sleep(0.3)
            report.add(_Row("any", "idle RSS after start-up and warm-up", "bytes",
                            {k: float(s.sample()) for k, s in samplers.items()} | failed,
                            "process tree; ours = server + worker"))
            await _transport_rows(report, folder, stack, peers, path)

        # load: first loads (memory phase "load"), the work, reloads at the end
        loads, reads, notes = _Series(), [], {}
        loads.failed = failed
        for key, peer in peers.items():
            samplers[key].mark("load")
            done = await _each({key: peer}, failed, "load", path)
            samplers[key].mark("work")
            loads.add(done)
            if key in done:
                notes[key] = done[key][1]
        reads.append(timed(lambda: path.read_text(encoding="utf-8"))[0])
        not_loaded = dict(failed)
        live = {k: p for k, p in peers.items() if k not in failed}

        await _exec_rows(report, label, reps, live, not_loaded)
        await _analysis_rows(report, label, reps, live, not_loaded, text)
        await _peek_rows(report, label, reps, live, not_loaded, text)
        await _search_rows(report, label, reps, live, not_loaded, text)

        peaks_load = {k: float(s.peak("load")) for k, s in samplers.items()}
        peaks_work = {k: float(max(s.peak("load"), s.peak("work"))) for k, s in samplers.items()}
        for sampler in samplers.values():
            sampler.mark("reload")
        for _ in range(reps.load - 1):
            loads.add(await _each(live, failed, "load", path))
            reads.append(timed(lambda: path.read_text(encoding="utf-8"))[0])
        report.add(_Row(label, "load the context from its file", "time", loads.values(live, {}),
                        f"median of {reps.load}; open().read() here {fmt_s(median(reads))}; "
                        + "; ".join(f"{k}: {v}" for k, v in notes.items())))
        idle = {k: s.last("idle") for k, s in samplers.items()}

        def above_idle(peaks: dict[str, float]) -> str:
            return "; ".join(f"{k} {(v - idle[k]) / len(text):.1f}x" for k, v in peaks.items())

        report.add(_Row(label, "peak RSS during the first load", "bytes", peaks_load | not_loaded,
                        f"above idle, in context sizes: {above_idle(peaks_load)}"))
        report.add(_Row(label, "peak RSS, first load through the searches", "bytes", peaks_work | not_loaded,
                        f"includes the analysis's own allocations (same code everywhere); above idle, in "
                        f"context sizes: {above_idle(peaks_work)}"))


async def _transport_rows(report: _PeersReport, folder: Path, stack: AsyncExitStack, peers: dict[str, Any],
                          path: Path) -> None:
    """Once: the MCP transport's floor (ping), and ``x = 1`` straight on each engine, no server."""
    pings: dict[str, list[float]] = {k: [] for k in peers if k != "rlms"}
    for _ in range(200):
        for key in pings:
            pings[key].append(await peers[key].ping())
    report.add(_Row("any", "MCP ping round trip", "time", {k: median(v) for k, v in pings.items()}
                    | {"rlms": "n/a: no transport"},
                    "median of 200: the transport's floor (ours: mcp 2.x server; aleph: mcp 1.x FastMCP)"))
    values: dict[str, float | str] = {}
    try:
        from sandbox import Limits, SandboxSession

        async with SandboxSession(Limits()) as session:
            await session.load_context("context", path.read_text(encoding="utf-8"))
            times = []
            for i in range(320):
                t0 = time.perf_counter()
                await session.execute("x = 1")
                if i >= 20:
                    times.append(time.perf_counter() - t0)
            values["ours"] = median(times)
    except Exception as exc:  # noqa: BLE001 - an internal API others may change: a cell, not a crash
        values["ours"] = f"error: {type(exc).__name__}: {exc}"
    try:
        driver = await start_engine_driver(folder, stack)
        for engine in ("aleph", "rlms"):
            reply = await driver.request(op="engine", engine=engine, path=str(path), runs=300)
            values[engine] = median(reply["times"])
    except PeerError as exc:
        values.setdefault("aleph", f"error: {exc}")
        values.setdefault("rlms", f"error: {exc}")
    report.add(_Row("1 MB", "exec 'x = 1' on the engine alone, no MCP", "time", values,
                    "median of 300; ours: SandboxSession.execute (RestrictedPython, worker over pipes); "
                    "aleph: REPLEnvironment.execute; rlms: LocalREPL.execute_code (both in-process)"))


async def _exec_rows(report: _PeersReport, label: str, reps: _Reps, live: dict[str, Any],
                     not_loaded: dict[str, str]) -> None:
    series = _Series()
    for _ in range(10):
        await _each(live, series.failed, "exec", "x = 1")
    for _ in range(reps.exec):
        series.add(await _each(live, series.failed, "exec", "x = 1"))
    report.add(_Row(label, "exec 'x = 1' round trip", "time", series.values(live, not_loaded),
                    f"median of {reps.exec}; ours, aleph: MCP over stdio; rlms: in-process call"))


async def _analysis_rows(report: _PeersReport, label: str, reps: _Reps, live: dict[str, Any],
                         not_loaded: dict[str, str], text: str) -> None:
    series, plain, outputs = _Series(), [], {}
    for _ in range(reps.analysis):
        t, out = _plain_analysis(text)
        plain.append(t)
        outputs["plain"] = out.strip()
        done = await _each(live, series.failed, "exec", ANALYSIS)
        series.add(done)
        outputs.update({k: v[1].strip() for k, v in done.items()})
    agree = len(set(outputs.values())) == 1
    if not agree:
        report.note(f"{label} analysis outputs differ: {outputs}")
    report.add(_Row(label, "CPU-bound analysis (same code)", "time", series.values(live, not_loaded),
                    f"median of {reps.analysis}; plain exec here {fmt_s(median(plain))}; "
                    f"outputs {'equal' if agree else 'DIFFER'}"))


async def _peek_rows(report: _PeersReport, label: str, reps: _Reps, live: dict[str, Any],
                     not_loaded: dict[str, str], text: str) -> None:
    start = int(len(text) * 0.75)
    series, wrong = _Series(), []
    for _ in range(reps.peek):
        done = await _each(live, series.failed, "peek", start, start + 2000)
        series.add(done)
        wrong += [k for k, (_, got) in done.items() if got != text[start:start + 2000]]
    report.add(_Row(label, "peek 2,000 chars at 75%", "time", series.values(live, not_loaded),
                    f"median of {reps.peek}; rlms: print(context[a:b]) in the REPL"
                    + (f"; WRONG slice from {sorted(set(wrong))}" if wrong else "")))


async def _search_rows(report: _PeersReport, label: str, reps: _Reps, live: dict[str, Any],
                       not_loaded: dict[str, str], text: str) -> None:
    for name, pattern in (("search: regex needle at 98% (1 hit, full scan)", RARE),
                          ("search: 'ERROR \\[db\\]', first 20 hits", FREQUENT)):
        expected = [text.count("\n", 0, m.start()) + 1 for _, m in zip(range(20), re.finditer(pattern, text))]
        series, wrong = _Series(), set()
        re_times = []
        for _ in range(reps.search):
            done = await _each(live, series.failed, "search", pattern, 20)
            series.add(done)
            wrong |= {k for k, (_, lines) in done.items() if lines != expected}
            re_times.append(timed(lambda: re.search(pattern, text))[0])
        report.add(_Row(label, name, "time", series.values(live, not_loaded),
                        f"median of {reps.search}; re.search here {fmt_s(median(re_times))}; rlms: re.finditer "
                        "in the REPL" + (f"; WRONG hits from {sorted(wrong)}" if wrong else "")))


async def _main(quick: bool) -> None:
    versions = ensure_peers_venv()
    report = _PeersReport(quick, __doc__.split("\n\n", 1)[1] if __doc__ else "")
    report.start()
    report.note("peers: " + ", ".join(f"{p} {v}" for p, v in versions.items())
                + " (aleph-rlm needs mcp<2: it imports mcp.server.fastmcp, gone in mcp 2.x)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlm-peers-") as tmp:
        for i, size_mb in enumerate((1, 50) if quick else (1, 50, 200)):
            await _size(report, Path(tmp), size_mb, quick, first=i == 0)
            (Path(tmp) / f"context-{size_mb}mb.log").unlink()
    report.verdict()
    report.note(f"total run time {time.perf_counter() - started:.0f} s")
    print("\n" + report.markdown())
    report.write()


def run(quick: bool = False) -> int:
    anyio.run(_main, quick)
    return 0
