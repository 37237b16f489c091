"""Restricted Python execution in a persistent worker process. Knows nothing of MCP.

The names below are imported on first use, not when the package is: the worker process imports
this package too (to reach ``sandbox.worker``), and eager imports here cost every worker 6.5 MB
(anyio, the host side, the regex engine) of code it never runs, and widen what a sandbox escape
would find loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ALLOWED_MODULES": "modules",
    "PAUSE": "values",
    "PatternError": "errors",
    "ContextMissing": "errors",
    "ExecResult": "values",
    "ExecTimeout": "errors",
    "FindResult": "textops",
    "Hit": "textops",
    "Isolation": "walls",
    "Limits": "values",
    "NotPaused": "errors",
    "PendingQuery": "values",
    "SandboxBusy": "errors",
    "SandboxClosed": "errors",
    "SandboxError": "errors",
    "SandboxSession": "host",
    "SearchTimeout": "errors",
    "SessionState": "values",
    "FileScan": "spill",
    "NotUtf8": "spill",
    "SpillStore": "spill",
    "SpilledText": "spill",
    "SubQueryFailure": "values",
    "SubQueryHandler": "values",
    "SubQueryRequest": "values",
    "VariableSlice": "values",
    "WorkerCrashed": "errors",
    "WorkerStartFailed": "errors",
    "sweep_stale": "spill",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from .errors import (
        ContextMissing,
        ExecTimeout,
        NotPaused,
        PatternError,
        SandboxBusy,
        SandboxClosed,
        SandboxError,
        SearchTimeout,
        WorkerCrashed,
        WorkerStartFailed,
    )
    from .host import SandboxSession
    from .walls import Isolation
    from .modules import ALLOWED_MODULES
    from .spill import FileScan, NotUtf8, SpilledText, SpillStore, sweep_stale
    from .textops import FindResult, Hit
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
