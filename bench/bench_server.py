"""The real ``rlm-mcp`` server over stdio, driven by the MCP Python SDK client as a user's host would.

Setup: a deterministic log-like text of 200 MB (``big``, ASCII, ~2.2M lines; 50 MB with ``--quick``,
and offsets below scale with it) and one of 1 MB (``small``) are written to a temporary folder;
``rlm-mcp --root <folder>`` is started through ``mcp.client.stdio`` by the SDK ``Client`` in
``mode="legacy"`` (protocol 2025-11-25, what hosts in the field speak). A unique needle line sits
at 98% of ``big``; a literal marker line occurs three times (at 10%, 50% and 90%) in each text.
Baselines run in this process on the same strings, interleaved with the tool calls so that machine
noise hits both sides alike. Figures, one run:

a. ``load_context(path=...)`` of the 200 MB file vs ``open(path).read()`` here: medians, ratio
   (target <= 2x). The load checks the file as UTF-8 while the kernel copies it, and sends the copy
   to the worker; the exact token count (tiktoken o200k_base, in a short-lived process on every
   core) and the line index come after it, in the background: (a) also says when the exact count
   showed in ``list_contexts`` (polled every 0.1 s), counted from the start of the load. The
   server's worker is warm (a 1 MB load came first); the first big load is into a new name, later
   ones replace it.
b. ``peek`` of 2,000 chars at offset 150M of ``big`` vs at offset 500K of ``small``: median latency
   of each, ratio big / small (~1 expected: a slice does not depend on the context's size).
c. ``search`` for the needle near the end of ``big`` (regex, one hit) vs ``re.search`` of the same
   pattern over the same string here: ratio (the tool also counts the newlines before the hit
   for its line number, and finishes the scan to know there are no more). And a literal search
   (regex=false, 3 hits) in ``small`` vs ``big``: both scan everything, so that ratio is the cost
   of size (expected ~ the size ratio), also shown as MB/s.
d. ``exec_python("x = 1")`` round trip over stdio: median, p10/p90.
e. memory: VmRSS of the server process and of its children (the sandbox worker, and the token
   counting process while it runs), sampled every 20 ms on a background thread. Peak of server +
   worker during the first 200 MB load as a multiple of the context size (target <= 2x), with each
   process's own peak; the peak while the exact count runs; the steady state once it is done
   (target <= 1.6x), and again after one more request reached the worker; the fixed cost ("idle":
   server + worker holding only the 1 MB context; target <= 80 MB).
f. where the load's time goes: the same ``RlmSession.load_context(path=...)`` run in this process
   (no MCP), with its phases timed: checking the path; the kernel's copy of the file with its
   UTF-8 check; sending the copy to the worker (sendfile into a pipe, read straight into the str);
   then, after the load returned, when the line index and the exact token count were ready.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ._common import MB, Report, RssSampler, fmt_bytes, fmt_s, log_text, median, process_tree, timed

__all__ = ["run"]

NEEDLE = "NEEDLE-7f3a9c order=31337 payload=the-one-we-want"
NEEDLE_PATTERN = r"NEEDLE-\w+ order=(\d+)"
MARKER = "MARKER-LITERAL-9b2e"


def _with_markers(text: str, needle: bool = True) -> str:
    """Insert the marker lines (and the needle) at fixed fractions, on line boundaries."""
    n = len(text)
    spots = [(0.10, MARKER), (0.50, MARKER), (0.90, MARKER)] + ([(0.98, NEEDLE)] if needle else [])
    pieces, last = [], 0
    for fraction, line in spots:
        cut = text.index("\n", int(n * fraction)) + 1
        pieces += [text[last:cut], f"2024-05-01 12:00:00 INFO [bench] {line}\n"]
        last = cut
    pieces.append(text[last:])
    return "".join(pieces)


@dataclass
class _Setup:
    """Inputs, baselines' tools and repetition counts shared by the measurements."""

    folder: Path
    big_path: Path
    small_path: Path
    big_text: str
    load_runs: int
    peek_runs: int
    search_runs: int
    literal_runs: int
    exec_runs: int

    @property
    def size(self) -> int:
        return len(self.big_text)


def _data(result: Any, tool: str) -> dict[str, Any]:
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"{tool} failed: {text}")
    return result.structured_content


async def _call(client: Any, tool: str, **arguments: Any) -> dict[str, Any]:
    return _data(await client.call_tool(tool, arguments), tool)


async def _timed_call(client: Any, tool: str, **arguments: Any) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    data = await _call(client, tool, **arguments)
    return time.perf_counter() - t0, data


def _find_server(marker: str) -> int:
    """The pid of our ``rlm-mcp`` child (the stdio client spawned it from this process)."""
    for pid in process_tree(os.getpid())[1:]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "rlm-mcp" in cmdline and marker in cmdline:
            return pid
    raise RuntimeError("could not find the rlm-mcp server process among this process's children")


def _pcts(values: list[float]) -> str:
    s = sorted(values)
    return f"p10 {fmt_s(s[len(s) // 10])}, p90 {fmt_s(s[len(s) * 9 // 10])}"


async def _main(quick: bool) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    report = Report("server", quick, __doc__.split("\n\n", 1)[1] if __doc__ else "")
    report.start()
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        folder = Path(tmp)
        setup = _Setup(
            folder=folder,
            big_path=folder / "big.log",
            small_path=folder / "small.log",
            big_text=_with_markers(log_text(50 * MB if quick else 200 * MB, seed=7)),
            load_runs=2 if quick else 3,
            peek_runs=100 if quick else 300,
            search_runs=3 if quick else 7,
            literal_runs=3 if quick else 7,
            exec_runs=100 if quick else 300,
        )
        setup.big_path.write_text(setup.big_text, encoding="utf-8", newline="")
        setup.small_path.write_text(_with_markers(log_text(1 * MB, seed=8), needle=False), encoding="utf-8",
                                    newline="")
        setup.big_path.read_bytes()  # into the page cache, for the server and the baseline alike

        errlog_path = folder / "server.stderr"
        params = StdioServerParameters(command="rlm-mcp", args=["--root", tmp, "--log-level", "WARNING"])
        try:
            with errlog_path.open("w") as errlog:
                async with Client(stdio_client(params, errlog=errlog), mode="legacy",
                                  read_timeout_seconds=900) as client:
                    with RssSampler(_find_server(tmp)) as rss:
                        memory = await _load(client, rss, report, setup)
                        await _peek(client, report, setup)
                        await _search(client, report, setup)
                        await _exec(client, report, setup)
                        await anyio.sleep(1.0)
                        memory["end"] = rss.sample()
                        _memory_rows(report, setup, memory)
        finally:
            log = errlog_path.read_text() if errlog_path.exists() else ""
            if log.strip():
                report.note("server stderr: " + log.strip().replace("\n", " | ")[-600:])
        await _phases(report, setup)
    report.write()


async def _load(client: Any, rss: RssSampler, report: Report, setup: _Setup) -> dict[str, Any]:
    """(a), and the memory samples of (e) taken around the first big load. Each load is timed
    after the previous one's background count ended (it would compete for the CPU)."""
    # Warm-up: the worker starts and the tokenizer loads on the first load; keep them out of (a).
    await _call(client, "load_context", name="small", path=str(setup.small_path))
    while any(c["token_count"] == "counting" for c in (await _call(client, "list_contexts"))["contexts"]):
        await anyio.sleep(0.1)  # the count's process exits when done: idle is without it
    await anyio.sleep(0.5)
    rss.mark("idle")
    await anyio.sleep(0.3)
    rss.sample()
    memory: dict[str, Any] = {"idle": {p: rss.last("idle", p) for p in rss.PARTS}}

    loads, reads = [], []
    summary: dict[str, Any] = {}
    counted = 0.0
    exact: dict[str, Any] = {}
    for i in range(setup.load_runs):
        if i == 0:
            rss.mark("first-load")
        started = time.perf_counter()
        t, summary = await _timed_call(client, "load_context", name="big", path=str(setup.big_path))
        loads.append(t)
        if i == 0:
            rss.mark("after-load")
            memory["peak"] = {p: rss.peak("first-load", p) for p in rss.PARTS}
            while True:
                listed = {c["name"]: c for c in (await _call(client, "list_contexts"))["contexts"]}
                if listed["big"]["token_count"] != "counting" or time.perf_counter() - started > 600:
                    break
                await anyio.sleep(0.1)
            counted, exact = time.perf_counter() - started, listed["big"]
            rss.mark("counted")
            memory["count_peak"] = {p: rss.peak("after-load", p) for p in rss.PARTS}
            await anyio.sleep(1.0)
            rss.sample()
            memory["steady"] = {p: rss.last("counted", p) for p in rss.PARTS}
            await _call(client, "exec_python", code="x = 1")  # one more request reaches the worker
            await anyio.sleep(0.5)
            rss.mark("after-request")
            memory["after_request"] = {p: rss.last("after-request", p) for p in rss.PARTS}
        else:
            rss.mark(f"counting-{i}")
            # A reload's count uses every core for a while: let it end before the next timing.
            while any(c["token_count"] == "counting" for c in (await _call(client, "list_contexts"))["contexts"]):
                await anyio.sleep(0.1)
        reads.append(timed(lambda: setup.big_path.read_text(encoding="utf-8"))[0])
        if i + 1 < setup.load_runs:
            rss.mark(f"reload-{i + 1}")
    if setup.load_runs > 1:
        memory["reload_peak"] = max(rss.peak(f"reload-{i}") for i in range(1, setup.load_runs))
    rss.mark("rest")

    load, read = median(loads), median(reads)
    report.row(f"a. load_context(path) of {setup.size / MB:.0f} MB / open().read()", f"{load / read:.1f}x", "<= 2x",
               f"median of {len(loads)}: tool {fmt_s(load)}, read {fmt_s(read)}; {summary['lines']:,} lines; "
               f"answered with token_count {summary['token_count']!r} (~{summary['tokens']:,}); see f for the split")
    report.row("a. exact token count shown by list_contexts, from the start of the first load", fmt_s(counted),
               "~1 min", f"{exact.get('tokens', 0):,} tokens ({exact.get('token_encoding')}, "
               f"token_count {exact.get('token_count')!r}); counted in a separate process that then exits")
    return memory


async def _peek(client: Any, report: Report, setup: _Setup) -> None:
    far, near = int(setup.size * 0.75), 500_000
    for _ in range(10):
        await _call(client, "peek", name="big", start=far, end=far + 2000)
    big_peeks, small_peeks = [], []
    data: dict[str, Any] = {}
    for _ in range(setup.peek_runs):
        t, data = await _timed_call(client, "peek", name="big", start=far, end=far + 2000)
        big_peeks.append(t)
        small_peeks.append((await _timed_call(client, "peek", name="small", start=near, end=near + 2000))[0])
    if data["text"] != setup.big_text[far : far + 2000]:
        raise RuntimeError("peek returned the wrong slice")
    pb, ps = median(big_peeks), median(small_peeks)
    report.row(f"b. peek 2,000 chars at {far / MB:.0f}M of {setup.size / MB:.0f} MB / at 500K of 1 MB",
               f"{pb / ps:.2f}x", "~1", f"median of {setup.peek_runs}: {fmt_s(pb)} vs {fmt_s(ps)}")


async def _search(client: Any, report: Report, setup: _Setup) -> None:
    big_text, size = setup.big_text, setup.size
    compiled = re.compile(NEEDLE_PATTERN, re.MULTILINE)
    tool_times, re_times = [], []
    data: dict[str, Any] = {}
    for _ in range(setup.search_runs):
        t, data = await _timed_call(client, "search", pattern=NEEDLE_PATTERN, name="big", max_results=20,
                                    window=100)
        tool_times.append(t)
        re_times.append(timed(lambda: compiled.search(big_text))[0])
    hit = compiled.search(big_text)
    if hit is None or [m["start"] for m in data["matches"]] != [hit.start()]:
        raise RuntimeError(f"search found {data['matches']!r}, expected one hit at {hit and hit.start()}")
    newline_times = [timed(lambda: big_text.count("\n", 0, hit.start()))[0] for _ in range(setup.search_runs)]
    st, sr, sn = median(tool_times), median(re_times), median(newline_times)
    report.row(f"c. search, needle at 98% of {size / MB:.0f} MB / re.search here", f"{st / sr:.2f}x", "",
               f"median of {setup.search_runs}: tool {fmt_s(st)}, re.search {fmt_s(sr)}; "
               f"hit on line {data['matches'][0]['line']:,}")
    report.row("c. the same search / (re.search + counting the newlines before the hit) here",
               f"{st / (sr + sn):.2f}x", "", f"the newline count (for the hit's line number) takes {fmt_s(sn)} here")

    lit_big, lit_small = [], []
    data_big: dict[str, Any] = {}
    data_small: dict[str, Any] = {}
    for _ in range(setup.literal_runs):
        t, data_big = await _timed_call(client, "search", pattern=MARKER, name="big", regex=False)
        lit_big.append(t)
        t, data_small = await _timed_call(client, "search", pattern=MARKER, name="small", regex=False)
        lit_small.append(t)
    if len(data_big["matches"]) != 3 or len(data_small["matches"]) != 3:
        raise RuntimeError("the literal search did not find the 3 markers")
    lb, ls = median(lit_big), median(lit_small)
    report.row(f"c. literal search, 3 hits: {size / MB:.0f} MB / 1 MB", f"{lb / ls:.0f}x", "",
               f"median of {setup.literal_runs}: {fmt_s(lb)} vs {fmt_s(ls)}; {size / MB / lb:,.0f} MB/s on "
               f"{size / MB:.0f} MB (a full scan: ~linear in size is expected)")


async def _exec(client: Any, report: Report, setup: _Setup) -> None:
    for _ in range(10):
        await _call(client, "exec_python", code="x = 1")
    execs = [(await _timed_call(client, "exec_python", code="x = 1"))[0] for _ in range(setup.exec_runs)]
    check = await _call(client, "exec_python", code="print(len(contexts['big']))")
    report.row("d. exec_python('x = 1') over stdio", fmt_s(median(execs)), "",
               f"median of {setup.exec_runs}; {_pcts(execs)}; len(contexts['big']) = {check['stdout'].strip()}")


def _split(values: dict[str, int]) -> str:
    return f"server {fmt_bytes(values['root'])} + worker {fmt_bytes(values['children'])}"


def _memory_rows(report: Report, setup: _Setup, memory: dict[str, Any]) -> None:
    size = setup.size
    idle, peak, steady, after = memory["idle"], memory["peak"], memory["steady"], memory["after_request"]
    counting = memory["count_peak"]
    report.row("e. peak RSS, server + worker, during the first load / context size",
               f"{peak['total'] / size:.2f}x", "<= 2x",
               f"{fmt_bytes(peak['total'])} for {fmt_bytes(size)}; each process's own peak: {_split(peak)}; "
               f"{(peak['total'] - idle['total']) / size:.2f}x above idle")
    report.row("e. peak RSS while the exact count runs (its process included) / context size",
               f"{counting['total'] / size:.2f}x", "", f"{fmt_bytes(counting['total'])}: {_split(counting)} "
               "(the worker's figure includes the counting process)")
    report.row("e. idle RSS (server + worker + the 1 MB context)", fmt_bytes(idle["total"]), "<= 80 MB",
               _split(idle))
    report.row("e. steady RSS 1 s after the exact count arrived / context size", f"{steady['total'] / size:.2f}x",
               "<= 1.6x", f"{fmt_bytes(steady['total'])}: {_split(steady)}")
    report.row("e. steady RSS after one more request reached the worker / context size",
               f"{after['total'] / size:.2f}x", "", f"{fmt_bytes(after['total'])}: {_split(after)}; "
               f"{fmt_bytes(memory['end'])} ({memory['end'] / size:.2f}x) after all the measurements")
    if "reload_peak" in memory:
        report.row("e. peak RSS while re-loading over the same name / context size",
                   f"{memory['reload_peak'] / size:.2f}x", "",
                   f"{fmt_bytes(memory['reload_peak'])}: the worker drops the old text before the new one arrives; "
                   "the count of the replaced text is stopped")


async def _phases(report: Report, setup: _Setup) -> None:
    """(f): the same load in this process, its phases timed by wrapping three internals, then the
    background work awaited. The wrapped names are internals others may rename: then the
    breakdown is skipped with a note instead of failing the benchmark."""
    try:
        import rlm_mcp.session as session_module
        from rlm_mcp.config import Settings
        from rlm_mcp.session import RlmSession
        from sandbox import SandboxSession, SpillStore

        targets = [(session_module, "load_path", "check the path", True),
                   (SpillStore, "copy_file", "copy + UTF-8 check", False),
                   (SandboxSession, "load_context", "send to the worker", True)]
        originals = [getattr(owner, attr) for owner, attr, _, _ in targets]
        settings = Settings(roots=(setup.folder,))
    except (ImportError, AttributeError, TypeError) as exc:
        report.note(f"f. phase breakdown skipped: {type(exc).__name__}: {exc}")
        return

    spans: dict[str, tuple[float, float]] = {}
    t0 = 0.0

    def wrap(original: Any, label: str, is_async: bool) -> Any:
        if is_async:
            @functools.wraps(original)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter() - t0
                try:
                    return await original(*args, **kwargs)
                finally:
                    spans.setdefault(label, (start, time.perf_counter() - t0))
            return wrapper

        @functools.wraps(original)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter() - t0
            try:
                return original(*args, **kwargs)
            finally:
                spans.setdefault(label, (start, time.perf_counter() - t0))
        return sync_wrapper

    read = median([timed(lambda: setup.big_path.read_text(encoding="utf-8"))[0] for _ in range(3)])
    session = RlmSession(settings)
    try:
        for (owner, attr, label, is_async), original in zip(targets, originals):
            setattr(owner, attr, wrap(original, label, is_async))
        await session.load_context("small", path=str(setup.small_path))  # start the worker
        await session.wait_for_counts()
        spans.clear()
        t0 = time.perf_counter()
        await session.load_context("big", path=str(setup.big_path))
        total = time.perf_counter() - t0
        await session.contexts.get("big").ready()
        indexed = time.perf_counter() - t0
        await session.wait_for_counts()
        counted = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - a broken breakdown must not lose the figures above
        report.note(f"f. phase breakdown failed: {type(exc).__name__}: {exc}")
        return
    finally:
        for (owner, attr, _, _), original in zip(targets, originals):
            setattr(owner, attr, original)
        await session.aclose()

    shown = "; ".join(f"{label} {fmt_s(end - start)} ({start:.2f}-{end:.2f} s)" for label, (start, end) in spans.items())
    size = f"{setup.size / MB:.0f} MB"
    report.row(f"f. RlmSession.load_context(path) of {size} in this process", fmt_s(total), "",
               f"{total / read:.1f}x read ({fmt_s(read)}): {shown}; after them "
               f"{fmt_s(total - max(e for _, e in spans.values()))}")
    report.row("f. after the load returned: line index ready, exact token count ready", f"{indexed:.2f} s, "
               f"{counted:.2f} s", "", "from the start of the load; both run in the background")


def run(quick: bool = False) -> int:
    anyio.run(_main, quick)
    return 0
