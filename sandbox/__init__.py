"""Restricted Python execution in a persistent worker process. Knows nothing of MCP."""

from .errors import (
    ContextMissing,
    ExecTimeout,
    NotPaused,
    SandboxBusy,
    SandboxClosed,
    SandboxError,
    SearchTimeout,
    WorkerCrashed,
    WorkerStartFailed,
)
from .host import SandboxSession
from .spill import SpilledText, SpillStore, sweep_stale
from .textops import FindResult, Hit
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
    "ContextMissing",
    "ExecResult",
    "ExecTimeout",
    "FindResult",
    "Hit",
    "Limits",
    "NotPaused",
    "PendingQuery",
    "SandboxBusy",
    "SandboxClosed",
    "SandboxError",
    "SandboxSession",
    "SearchTimeout",
    "SessionState",
    "SpillStore",
    "SpilledText",
    "SubQueryFailure",
    "SubQueryHandler",
    "SubQueryRequest",
    "VariableSlice",
    "WorkerCrashed",
    "WorkerStartFailed",
    "sweep_stale",
]
