"""A cap on the sandbox workers running at once, across sessions.

Each session's worker is a process of tens of MB. Sessions that clients never close (the
Inspector CLI sends no DELETE; a 2026-07-28 client keeps only a handle) must not pile them up:
before a worker starts beyond ``--max-workers``, the least recently used idle worker stops. Its
session keeps its contexts on disk and starts a fresh worker, given every context, on next use
(its variables are lost, and the next result says so). Workers that run code, wait on
sub-queries or serve a request are never stopped; if all are, the start waits a little, then
fails with ``ServerFull``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from .errors import ServerFull

if TYPE_CHECKING:
    from .session import RlmSession

__all__ = ["WorkerCap"]

logger = logging.getLogger(__name__)


class WorkerCap:
    def __init__(self, limit: int, sessions: Callable[[], Iterable[RlmSession]], wait: float = 30.0) -> None:
        self.limit = limit
        self.wait = wait
        self._sessions = sessions
        self._starting: list[RlmSession] = []
        self._lock = anyio.Lock()

    @asynccontextmanager
    async def slot(self, session: RlmSession) -> AsyncIterator[None]:
        """Held while ``session`` starts its worker: room is made first, and the starting worker
        counts against the cap until it runs."""
        async with self._lock:
            await self._make_room(session)
            self._starting.append(session)
        try:
            yield
        finally:
            self._starting.remove(session)

    async def _make_room(self, session: RlmSession) -> None:
        deadline = anyio.current_time() + self.wait
        while True:
            running = [s for s in self._sessions() if s.worker_running and s is not session]
            if len(running) + len(self._starting) < self.limit:
                return
            idle = [s for s in running if s.stoppable]
            if idle:
                victim = min(idle, key=lambda s: s.last_used)
                logger.debug("stopping the least recently used idle worker (of %s) to start one for %s",
                            victim.label, session.label)
                await victim.stop_worker(f"{self.limit} workers were running (--max-workers) and it was the "
                                         "least recently used")
                continue
            if anyio.current_time() > deadline:
                raise ServerFull(
                    f"All {self.limit} sandbox workers (--max-workers) are busy running code or waiting on "
                    "sub-queries, so this session's worker cannot start. Try again in a moment; the server's "
                    "operator can raise --max-workers.")
            await anyio.sleep(0.1)
