"""Test support shared by the suites: process trees from /proc, a real ``rlm-mcp --http`` server,
tool calls that fail loudly, polling.

Everything here stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client

from conftest import free_port, rlm_mcp_command

from llm_server import FakeOpenAI, serve_fake_openai

__all__ = [
    "FakeOpenAI",
    "HttpServer",
    "call",
    "call_raw",
    "children",
    "descendants",
    "innermost",
    "gone",
    "http_server",
    "rss",
    "serve_fake_openai",
    "tree_rss",
    "wait_for",
    "worker_pid",
]


# -- processes -----------------------------------------------------------------------------------


def bubblewrap_namespaces(bwrap: str | None) -> bool:
    """Whether ``bwrap`` can build its namespaces here (containers often forbid user namespaces):
    the tests of the outer walls skip, with a reason, where it cannot."""
    if bwrap is None:
        return False
    import sys

    from sandbox import Isolation, walls

    argv = walls.worker_argv(sys.executable, "pass", {}, Isolation(), bwrap)
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


def children(pid: int) -> set[int]:
    """Direct children of ``pid``, zombies included (a zombie is a child nobody reaped: a leak)."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:  # a child is listed under the thread that forked it
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _is_helper(cmdline: bytes) -> bool:
    return b"rlm_mcp.tokens" in cmdline or b"_pdf_worker" in cmdline


def innermost(pid: int) -> int:
    """Follow single-child links down from ``pid`` (a worker under bubblewrap is two below it)."""
    for _ in range(4):
        below = children(pid)
        if len(below) != 1:
            break
        pid = next(iter(below))
    return pid


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = list(children(pid))
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children(p))
    return out


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            tail = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return tail[0], int(tail[1])


def gone(pid: int) -> bool:
    """The process no longer exists, or is a zombie that is not ours to reap (an orphan's
    zombie waits for init, which is outside the project)."""
    st = _stat(pid)
    if st is None:
        return True
    state, ppid = st
    return state == "Z" and ppid != os.getpid()


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_rss(pid: int) -> int:
    """VmRSS of ``pid`` plus all its descendants, in bytes."""
    return rss(pid) + sum(rss(p) for p in descendants(pid))


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``predicate`` until true; returns the seconds it took; fails with ``what`` on timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what}")
        await anyio.sleep(interval)
    return time.monotonic() - started


# -- tool calls ----------------------------------------------------------------------------------


async def call_raw(client: Client, tool: str, **args: Any) -> tuple[bool, Any]:
    """(is_error, structured content or the error text)."""
    result = await client.call_tool(tool, args)
    if result.is_error:
        return True, result.content[0].text if result.content else ""
    return False, result.structured_content


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    is_error, value = await call_raw(client, tool, **args)
    assert not is_error, f"{tool} failed: {value}"
    return value


async def worker_pid(client: Client) -> int:
    pid = (await call(client, "rlm_status"))["worker"]["pid"]
    assert isinstance(pid, int), "the session has no running worker"
    return pid


# -- a real HTTP server --------------------------------------------------------------------------


@dataclass
class HttpServer:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        """The server's sandbox workers, as the pids ``rlm_status`` reports: a child, or the
        process at the end of the chain under a bubblewrap child (bwrap, its init, the worker).
        Short-lived helpers (a background token count, a PDF reader) are not workers; a worker
        that is exiting (its command line already empty) still is, until it is gone."""
        return {w for w in (innermost(c) for c in children(self.pid)) if not _is_helper(_cmdline(w))}


@contextmanager
def http_server(*args: str, env: dict[str, str] | None = None, root: Path | None = None) -> Iterator[HttpServer]:
    """``rlm-mcp --http --port <free> [args]``; waits until it answers, stops it afterwards and
    checks it left no child behind."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="rlm-rel-", suffix=".log")[1])
    cmd = [rlm_mcp_command(), "--http", "--port", str(port), *args]
    if root is not None:
        cmd += ["--root", str(root)]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, env={**os.environ, **(env or {})})
    server = HttpServer(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{server.base}/", timeout=0.5, trust_env=False)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise RuntimeError(f"rlm-mcp --http exited: {server.log()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("rlm-mcp --http did not start in 30 s") from None
                time.sleep(0.1)
        yield server
    finally:
        left = descendants(proc.pid) if proc.poll() is None else set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # Whatever the server did not reap is gone with it only if it was a worker that noticed.
        deadline = time.monotonic() + 10
        while any(not gone(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.05)
        stray = [p for p in left if not gone(p)]
        for p in stray:  # do not leave them running for the rest of the suite
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            log.unlink()
        except OSError:
            pass
        assert not stray, f"processes outlived the server: {stray}"
