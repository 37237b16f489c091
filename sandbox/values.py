"""The values the sandbox API takes and returns: limits, sub-query requests and answers, results.

Kept apart from ``host.py`` so that code plugging into the sandbox (a sub-query handler, the MCP
layer shaping results) depends on these small types, not on the process machinery.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "PAUSE",
    "ExecResult",
    "Limits",
    "PendingQuery",
    "SessionState",
    "SubQueryAnswer",
    "SubQueryFailure",
    "SubQueryHandler",
    "SubQueryRequest",
    "VariableSlice",
]


@dataclass(frozen=True)
class Limits:
    """Per-session limits; every one but ``cpu_margin`` is a server flag."""

    exec_timeout: float = 60.0
    """Seconds of running time per execution (time blocked on sub-queries not counted)."""
    kill_grace: float = 2.0
    """Extra seconds before the host kills a worker whose code ignored the timeout."""
    cpu_margin: float = 10.0
    """CPU seconds beyond 2 x exec_timeout before RLIMIT_CPU ends a worker whose host failed to
    stop it (a backstop for a host that is gone, so generous; tests shorten it)."""
    memory_mb: int | None = None
    """Fixed address-space cap for the worker; None sizes it to the contexts plus the margin."""
    memory_margin_mb: int = 1024
    max_output_chars: int = 100_000
    max_code_chars: int = 1_000_000
    max_fds: int = 32
    start_timeout: float = 20.0
    request_timeout: float = 120.0
    """Seconds for a non-execution request (load a context, read a variable)."""


@dataclass(frozen=True)
class SubQueryRequest:
    """What sandboxed code asked for: one frame, one or many prompts."""

    id: int
    kind: Literal["llm", "rlm"]
    prompts: list[str]
    batched: bool
    contexts: list[str | None] | None = None


@dataclass(frozen=True)
class SubQueryFailure:
    """An answer slot that failed; ``llm_query`` raises it as ``SubQueryError``."""

    message: str


SubQueryAnswer = str | SubQueryFailure


class _Pause:
    def __repr__(self) -> str:
        return "PAUSE"


PAUSE: Final = _Pause()
"""Returned by a sub-query handler to pause the execution until ``resume``."""

SubQueryHandler = Callable[[SubQueryRequest], Awaitable["Sequence[SubQueryAnswer] | _Pause"]]


@dataclass(frozen=True)
class PendingQuery:
    id: str
    prompt: str
    kind: str = "llm"
    context: str | None = None

    @property
    def text(self) -> str:
        """What the answerer must read: the prompt, and for ``rlm_query`` its context after it."""
        return f"{self.prompt}\n\n{self.context}" if self.context else self.prompt


@dataclass
class ExecResult:
    status: Literal["ok", "error", "paused"]
    stdout: str = ""
    error: str | None = None
    final: str | None = None
    """The final answer, cut to ``Limits.max_output_chars``; ``get_variable("FINAL")`` reads all of it."""
    final_chars: int | None = None
    """Length of the whole final answer (None when there is none)."""
    variables: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    pending: list[PendingQuery] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    restarted: bool = False
    variables_lost: list[str] = field(default_factory=list)
    duration: float = 0.0


@dataclass(frozen=True)
class VariableSlice:
    name: str
    start: int
    end: int
    total: int
    text: str


class SessionState(enum.Enum):
    NEW = "new"  # constructed, start() not called yet
    READY = "ready"  # worker idle, waiting for a request
    RUNNING = "running"  # an execution holds the worker
    PAUSED = "paused"  # code blocked in llm_query, waiting for resume()
    CLOSED = "closed"  # aclose() was called; nothing works any more
