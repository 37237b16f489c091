"""Restricted Python execution in a persistent worker process. Knows nothing of MCP."""

from .errors import (
    ExecTimeout,
    NotPaused,
    SandboxBusy,
    SandboxClosed,
    SandboxError,
    WorkerCrashed,
    WorkerStartFailed,
)
from .host import SandboxSession
from .modules import ALLOWED_MODULES
from .values import (
    PAUSE,
    ExecResult,
    Limits,
    PendingQuery,
    SessionState,
    SubQueryFailure,
    SubQueryHandler,
    SubQueryRequest,
    VariableSlice,
)

__all__ = [
    "ALLOWED_MODULES",
    "PAUSE",
    "ExecResult",
    "ExecTimeout",
    "Limits",
    "NotPaused",
    "PendingQuery",
    "SandboxBusy",
    "SandboxClosed",
    "SandboxError",
    "SandboxSession",
    "SessionState",
    "SubQueryFailure",
    "SubQueryHandler",
    "SubQueryRequest",
    "VariableSlice",
    "WorkerCrashed",
    "WorkerStartFailed",
]
