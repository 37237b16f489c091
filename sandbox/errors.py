"""Errors raised by the sandbox host.

Hierarchy::

    SandboxError              base of everything the sandbox raises on purpose
    ├── SandboxClosed         the session was closed, or used before start()
    ├── SandboxBusy           an execution is already running or paused
    ├── NotPaused             resume()/cancel_pending() without a paused execution
    ├── WorkerStartFailed     the worker did not say READY in time
    └── WorkerCrashed         the worker died mid-request (killed, out of memory, ...)
        └── ExecTimeout       the wall-clock limit was hit and the worker was killed
    ├── ContextMissing        a read named a context the worker does not have
    ├── SearchTimeout         a search pattern ran past its timeout
    └── PatternError          a search pattern is invalid or too large to compile

Code that fails inside the sandbox (a NameError, a refused import, a MemoryError)
is not an exception here: it is data, returned in ``ExecResult.error``.
"""

from __future__ import annotations

__all__ = [
    "SandboxError",
    "SandboxClosed",
    "SandboxBusy",
    "NotPaused",
    "WorkerStartFailed",
    "WorkerCrashed",
    "ExecTimeout",
    "ContextMissing",
    "SearchTimeout",
    "PatternError",
]


class SandboxError(Exception):
    """Base of the sandbox's deliberate errors; messages are safe to show a model."""


class SandboxClosed(SandboxError):
    """The session is closed or was never started."""


class SandboxBusy(SandboxError):
    """Another execution is running or paused in this session."""


class NotPaused(SandboxError):
    """resume() or cancel_pending() was called while nothing waits for answers."""


class WorkerStartFailed(SandboxError):
    """The worker process did not start or did not report READY in time."""


class WorkerCrashed(SandboxError):
    """The worker process died while serving a request; a fresh one replaces it."""


class ExecTimeout(WorkerCrashed):
    """The execution outran its wall-clock limit and the worker was killed."""


class ContextMissing(SandboxError):
    """A read named a context the worker does not have."""


class SearchTimeout(SandboxError):
    """A search pattern ran past its timeout in the worker."""


class PatternError(SandboxError):
    """The worker refused a search pattern: invalid, or too large to compile safely."""

    def __init__(self, message: str, msg: str, pos: int | None) -> None:
        super().__init__(message)
        self.msg = msg
        """What is wrong, without the position."""
        self.pos = pos
        """Where in the pattern, when known."""
