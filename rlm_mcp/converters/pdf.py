"""PDF: the text of every page in order, each after a ``--- page N ---`` line, read by PDFium
(pypdfium2) in a separate process that is killed when a PDF takes longer than ``TIMEOUT``.

Why pypdfium2: 4-14x faster than pypdf and 19-35x faster than pdfminer.six with the same text
(bench/results/pdf-libraries.md), maintained, with wheels for Linux, macOS and Windows that carry
PDFium itself. Why a process: a thread cannot be stopped, and PDFium is C++ fed with untrusted
bytes; a process can be killed at the deadline, and its crash or memory blow-up is its own.

Workers are kept for reuse (a fresh one per file costs ~0.14 s, a reused one a few ms:
bench/results/documents.md), at most ``MAX_WORKERS`` at once. An idle one is ended and reaped
after ``IDLE`` seconds by a timer here (no zombie is left); it also ends by itself when this
process goes away (EOF on its stdin) or stops calling it.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

from rlm_mcp.errors import TooLarge

from . import Budget, ConversionError, Converted

__all__ = ["TIMEOUT", "convert", "shutdown"]

TIMEOUT = 30.0  # seconds one PDF may take, start-up of a worker included
IDLE = 60.0  # seconds an idle reader is kept
MAX_WORKERS = max(2, os.cpu_count() or 1)
_WORKER = Path(__file__).with_name("_pdf_worker.py")
_START = 20.0  # seconds a worker may take to say READY (a cold disk, a loaded machine)


class _Worker:
    """One reader process and its pipes; every read and write honours a deadline."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(_WORKER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self._buffer = b""
        try:
            if self._line(time.monotonic() + _START) != b"READY":
                raise OSError("the PDF reader did not start")
        except BaseException:  # not started in time, or died: never leave it running unowned
            self.kill()
            raise

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        left = deadline - time.monotonic()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, event)
            if left <= 0 or not sel.select(left):
                raise TimeoutError

    def _send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(self._in, selectors.EVENT_WRITE, deadline)
            try:
                view = view[os.write(self._in, view):]
            except BlockingIOError:
                continue

    def _fill(self, deadline: float) -> None:
        self._wait(self._out, selectors.EVENT_READ, deadline)
        try:
            chunk = os.read(self._out, 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            raise EOFError
        self._buffer += chunk

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self._buffer:
            self._fill(deadline)
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _exactly(self, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            self._fill(deadline)
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def ask(self, data: bytes, max_chars: int, deadline: float) -> tuple[dict, str]:
        self._send(json.dumps({"size": len(data), "max_chars": max_chars}).encode() + b"\n", deadline)
        self._send(data, deadline)
        reply = json.loads(self._line(deadline))
        text = self._exactly(reply["size"], deadline).decode("utf-8", "replace") if reply.get("ok") else ""
        return reply, text

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class _Pool:
    def __init__(self) -> None:
        self._idle: list[tuple[_Worker, float]] = []  # (worker, when it became idle)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_WORKERS)
        self._timer: threading.Timer | None = None

    def _take(self) -> _Worker | None:
        with self._lock:
            while self._idle:
                worker, _ = self._idle.pop()
                if worker.proc.poll() is None:
                    return worker
                worker.kill()  # exited while idle: reap it
        return None

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append((worker, time.monotonic()))
            if self._timer is None:
                self._schedule(IDLE)

    def _schedule(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._reap)
        self._timer.daemon = True
        self._timer.start()

    def _reap(self) -> None:
        """End the readers idle for ``IDLE`` seconds; come back for the others."""
        now = time.monotonic()
        with self._lock:
            old = [w for w, since in self._idle if now - since >= IDLE]
            self._idle = [(w, since) for w, since in self._idle if now - since < IDLE]
            self._timer = None
            if self._idle:
                self._schedule(max(0.1, IDLE - (now - min(since for _, since in self._idle))))
        for worker in old:
            worker.kill()

    def run(self, data: bytes, max_chars: int, timeout: float) -> tuple[dict, str]:
        with self._slots:
            deadline = time.monotonic() + timeout
            for attempt in (0, 1):
                worker = self._take() if attempt == 0 else None  # the second try: always a fresh reader
                fresh = worker is None
                if worker is None:
                    try:
                        worker = _Worker()
                    except (OSError, TimeoutError, EOFError) as exc:  # _Worker killed what it spawned
                        raise ConversionError(f"the PDF reader could not start ({type(exc).__name__}: {exc})"
                                              ) from exc
                try:
                    reply, text = worker.ask(data, max_chars, deadline)
                except TimeoutError:
                    worker.kill()
                    raise ConversionError(f"timed out: reading the PDF took more than {timeout:g} s") from None
                except (OSError, EOFError, ValueError) as exc:
                    worker.kill()
                    if fresh:  # a fresh reader died on this PDF: the PDF is the cause
                        code = worker.proc.returncode
                        raise ConversionError(f"the PDF reader crashed on this file (exit status {code})") from exc
                    continue  # an idle reader that had exited (or was exiting): try a fresh one
                self._give_back(worker)
                return reply, text
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        for worker, _ in idle:
            worker.kill()


_pool = _Pool()
atexit.register(_pool.shutdown)


def shutdown() -> None:
    """End the idle reader processes (they also end by themselves after a minute idle)."""
    _pool.shutdown()


def convert(data: bytes, name: str, budget: Budget) -> Converted:
    reply, text = _pool.run(data, budget.chars, TIMEOUT)
    if reply.get("too_large"):
        raise TooLarge(
            f"{name} would pass the load cap: its text needs more than the {budget.chars:,} characters left "
            f"of it. Load a smaller part, or start the server with --max-load-mb set higher."
        )
    if not reply.get("ok"):
        raise ConversionError(str(reply.get("reason", "unreadable PDF"))[:300])
    budget.spend(len(text), name)
    return Converted("pdf", [("", text)])
