"""Exact token counts in the background, in a process that exits when done.

An exact o200k count runs at tens of MB/s per core: 200 MB took 6-7 s of a load that otherwise
takes well under a second, and the tokenizer costs the process that loads it ~50 MB for good.
So a load answers with an estimate at once, and a ``CountJob`` counts the context's file on disk
(the spill copy the session keeps anyway) in a child ``python -m rlm_mcp.tokens`` on all cores;
the session puts the count in place when it arrives, unless the context has changed meanwhile.

A job runs on its own thread (the session has no task group that outlives a tool call, and a
thread is all that waiting on a child needs). At most ``SLOTS`` children run at once; the rest
queue. ``cancel`` kills a running child; a cancelled job never calls back.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["CountJob", "SLOTS"]

logger = logging.getLogger(__name__)

SLOTS = threading.BoundedSemaphore(2)
"""Children counting at once, across sessions (each uses every core)."""

_BASE_TIMEOUT = 60.0
_SECONDS_PER_MB = 1.0  # ~30 MB/s per core measured; a generous bound for one slow core

Done = Callable[[int | None, str], None]
"""``done(tokens, encoding)``, or ``done(None, why)`` when the count failed."""


class CountJob:
    """Counts bytes ``start:end`` of ``path`` in a child process, then calls ``done`` (from the
    job's thread) unless cancelled first."""

    def __init__(self, path: Path, start: int, end: int, done: Done, encoding: str = "o200k_base") -> None:
        self.path, self.offset, self.end, self.encoding = path, start, end, encoding
        self._done = done
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name="rlm-token-count", daemon=True)

    def start(self) -> CountJob:
        self._thread.start()
        return self

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop: kill the child if it runs; ``done`` will not be called."""
        with self._lock:
            self._cancelled.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (or was cancelled and its thread ended); False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            result = self._count()
        except Exception as exc:  # noqa: BLE001 - any failure leaves the estimate in place
            result = (None, f"{type(exc).__name__}: {exc}")
        if not self.cancelled:
            self._done(*result)

    def _count(self) -> tuple[int | None, str]:
        timeout = _BASE_TIMEOUT + _SECONDS_PER_MB * (self.end - self.offset) / 1e6
        with SLOTS:
            with self._lock:
                if self.cancelled:
                    return None, "cancelled"
                self._process = process = subprocess.Popen(
                    [sys.executable, "-m", "rlm_mcp.tokens", os.fspath(self.path), str(self.offset), str(self.end),
                     self.encoding, str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    cwd=_package_parent())
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                return None, f"the count took over {timeout:.0f} s"
        if self.cancelled:
            return None, "cancelled"
        if process.returncode != 0:
            last = err.strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
            logger.warning("token count of %s failed: %s", self.path, last[0])
            return None, last[0][:200]
        reply = json.loads(out)
        return int(reply["tokens"]), str(reply["encoding"])


def _package_parent() -> str:
    """The folder holding the ``rlm_mcp`` package, so that ``-m`` finds it from a checkout too."""
    return str(Path(__file__).resolve().parent.parent)
