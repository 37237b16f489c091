"""Shared pieces of the benchmarks: deterministic data, timing, RSS sampling and the report."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import socket
import subprocess
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "MB",
    "Report",
    "RssSampler",
    "children",
    "fmt_bytes",
    "free_port",
    "fmt_s",
    "log_text",
    "median",
    "process_tree",
    "rss_bytes",
    "stop_process",
    "timed",
]

MB = 1_000_000
RESULTS = Path(__file__).resolve().parent / "results"

_WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
    "upsilon phi chi psi omega request response timeout retry cache miss hit user session token error "
    "failed ok connect disconnect queue worker shard replica leader follower commit abort"
).split()
_COMPONENTS = ("api", "db", "auth", "cache", "queue", "scheduler", "web", "billing")
_LEVELS = ("INFO",) * 6 + ("WARN",) * 2 + ("ERROR", "DEBUG")


def log_text(size: int, seed: int = 7) -> str:
    """About ``size`` chars of deterministic, ASCII, log-like text (~90 chars a line), e.g.
    ``2024-05-01 00:00:00 WARN [db] retry cache hit ... id=14``. Same size and seed, same text."""
    import random

    rng = random.Random(seed)
    pool = [
        f"{rng.choice(_LEVELS)} [{rng.choice(_COMPONENTS)}] " + " ".join(rng.choices(_WORDS, k=rng.randint(4, 12)))
        for _ in range(4096)
    ]
    lines = size // 90 + 1
    # Multiplicative hashing picks a pool line per line number: fast, and the order looks random.
    text = "\n".join(
        [
            f"2024-05-{1 + i // 8_640_000 % 28:02d} {i // 360_000 % 24:02d}:{i // 6000 % 60:02d}:"
            f"{i // 100 % 60:02d} {pool[(i * 2654435761) % 4096]} id={i * 7 % 1_000_003}"
            for i in range(lines)
        ]
    )
    return text[:size]


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_s(seconds: float) -> str:
    """Seconds in the unit that reads best."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: float) -> str:
    return f"{n / MB:,.0f} MB"


# -- processes ------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of one process, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (zombies included)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:  # a child is listed under the thread that forked it
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return found


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (benchmarks never listen anywhere else)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s; always reaped."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children(p))
    return tree


class RssSampler:
    """Samples VmRSS of a process tree every ``interval`` s on a background thread.

    Each sample records three sums: ``"total"`` (the whole tree), ``"root"`` (the process
    itself) and ``"children"`` (every descendant). ``mark(phase)`` starts a new phase;
    ``peak(phase, part)`` / ``last(phase, part)`` give the phase's highest and latest values.
    The tree is re-walked on every sample, so a worker started or restarted mid-phase counts."""

    PARTS = ("total", "root", "children")

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self._phase = "start"
        self._peaks: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        """Take one sample now; returns the tree's total."""
        root = rss_bytes(self.pid)
        children = sum(rss_bytes(p) for p in process_tree(self.pid)[1:])
        values = {"total": root + children, "root": root, "children": children}
        with self._lock:
            for part, value in values.items():
                key = (self._phase, part)
                self._peaks[key] = max(self._peaks.get(key, 0), value)
                self._last[key] = value
        return values["total"]

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def mark(self, phase: str) -> None:
        self.sample()  # close the old phase with a fresh reading
        with self._lock:
            self._phase = phase
        self.sample()

    def peak(self, phase: str, part: str = "total") -> int:
        return self._peaks.get((phase, part), 0)

    def last(self, phase: str, part: str = "total") -> int:
        return self._last.get((phase, part), 0)


# -- report ------------------------------------------------------------------------------------


class Report:
    """Rows of (figure, value, target, note), printed as they come and written as markdown."""

    def __init__(self, name: str, quick: bool, intro: str) -> None:
        self.name = name
        self.quick = quick
        self.intro = intro
        self.rows: list[tuple[str, str, str, str]] = []
        self.notes: list[str] = []
        self.command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        self.started = _dt.datetime.now().astimezone()
        self.load_start = os.getloadavg()

    def header(self, final: bool = False) -> str:
        # The load average says how shared the machine was: absolute times depend on it, ratios less.
        load = f"load average at start {self.load_start[0]:.2f}"
        if final:
            load += f", at end {os.getloadavg()[0]:.2f}"
        return (
            f"Date: {self.started:%Y-%m-%d %H:%M %Z}  \n"
            f"Python: {platform.python_version()} ({platform.python_implementation()}), "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {load}  \n"
            f"Command: `{self.command}`"
        )

    def start(self) -> None:
        print(f"# bench {self.name}{' (quick)' if self.quick else ''}")
        print(self.header().replace("  \n", "\n"))
        print()

    def row(self, figure: str, value: str, target: str = "", note: str = "") -> None:
        self.rows.append((figure, value, target, note))
        line = f"{figure}: {value}"
        if target:
            line += f"  [target {target}]"
        if note:
            line += f"  ({note})"
        print(line, flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)

    def write(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}{'-quick' if self.quick else ''}.md"
        out = [f"# bench {self.name}{' (quick)' if self.quick else ''}", "", self.header(final=True), "",
               self.intro.strip(), "",
               "| figure | value | target | note |", "|---|---|---|---|"]
        out += [f"| {f} | {v} | {t} | {n} |" for f, v, t, n in self.rows]
        if self.notes:
            out += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        path.write_text("\n".join(out) + "\n")
        print(f"\nload average at end {os.getloadavg()[0]:.2f}; written to {path.relative_to(RESULTS.parent.parent)}")
        return path


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value
