"""Errors raised inside rlm_mcp.

Hierarchy::

    RlmError                     base of everything this package raises on purpose
    ├── InvalidInput             the caller's arguments are wrong; the message says how to fix them
    │   ├── UnknownContext       no context has that name
    │   ├── InvalidRange         start/end outside the data
    │   ├── InvalidPattern       a regex that does not compile
    │   └── UnknownVariable      no sandbox variable has that name
    ├── SourceError              a file, folder, glob or URL could not be loaded
    │   ├── PathNotAllowed       outside the allowed roots (also symlinks that lead out)
    │   ├── UrlNotAllowed        URL loading is off, or the address is loopback/private
    │   └── TooLarge             over a configured size cap
    ├── SessionGone              the `session` handle names no live session (ended, or never minted)
    ├── ServerFull               --max-sessions sessions, or --max-workers busy workers, already
    ├── BudgetExceeded           a sub-query budget (count, tokens, time, depth) is spent
    ├── BackendUnavailable       no sub-LLM backend can answer
    └── SubQueryFailed           a sub-LLM call failed after retries

Only the tool layer turns these into MCP tool errors; their messages are written for the model.
"""

from __future__ import annotations

__all__ = [
    "RlmError",
    "InvalidInput",
    "UnknownContext",
    "InvalidRange",
    "InvalidPattern",
    "UnknownVariable",
    "SourceError",
    "PathNotAllowed",
    "UrlNotAllowed",
    "TooLarge",
    "SessionGone",
    "ServerFull",
    "BudgetExceeded",
    "BackendUnavailable",
    "SubQueryFailed",
]


class RlmError(Exception):
    """Base of the errors rlm_mcp raises deliberately; the text is safe to show the client."""


class InvalidInput(RlmError):
    """The caller passed arguments that cannot work; the message says what to pass instead."""


class UnknownContext(InvalidInput):
    """A context name that was never loaded (or was dropped by a reset)."""


class InvalidRange(InvalidInput):
    """A start/end pair outside the data or in the wrong order."""


class InvalidPattern(InvalidInput):
    """A search pattern that is not a valid regular expression."""


class UnknownVariable(InvalidInput):
    """A sandbox variable name that does not exist."""


class SourceError(RlmError):
    """A source (file, folder, glob, URL) could not be read."""


class PathNotAllowed(SourceError):
    """A path that resolves outside every allowed root."""


class UrlNotAllowed(SourceError):
    """URL loading is disabled, or the URL points at a refused address."""


class TooLarge(SourceError):
    """Input over a configured size cap."""


class SessionGone(RlmError):
    """A ``session`` handle that names no live session: it ended (idle, closed) or was never minted.
    The call never falls back to another session; the message says how to start a new one."""


class ServerFull(RlmError):
    """The server holds as many sessions (--max-sessions) or busy workers (--max-workers) as allowed."""


class BudgetExceeded(RlmError):
    """A per-session budget is spent; the message names it and the flag that raises it."""


class BackendUnavailable(RlmError):
    """No sub-LLM backend is usable for this session."""


class SubQueryFailed(RlmError):
    """A sub-LLM call failed (after retries, where they apply)."""
