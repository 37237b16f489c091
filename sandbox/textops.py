"""Read-only operations on a loaded context that the worker serves for its host (peek, search).

They live here, not in the MCP layer, because the worker holds the only copy of a context in
memory: the server keeps its contexts on disk and asks the worker for slices and matches.

Matching uses the ``regex`` package where it is installed (it is a dependency of rlm-mcp): it
stops at a timeout, so a catastrophic pattern cannot hang the worker. Without it, ``re`` is used
and the timeout is not enforced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

try:
    import regex as _regex
except ImportError:  # pragma: no cover - regex is a dependency; the fallback keeps sandbox/ standalone
    _regex = None

__all__ = ["PATTERN_ERRORS", "FindResult", "Hit", "PatternTimeout", "compile_pattern", "find_matches"]

# What compile_pattern raises for a bad pattern (both have ``msg`` and ``pos``).
PATTERN_ERRORS: tuple[type[Exception], ...] = (re.error,) if _regex is None else (re.error, _regex.error)


class PatternTimeout(Exception):
    """The pattern did not finish scanning within its timeout."""


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    lo: int
    """Where ``text`` (the hit with its window) starts."""
    text: str
    text_truncated: bool


@dataclass
class FindResult:
    hits: list[Hit] = field(default_factory=list)
    truncated: bool = False
    next_start: int = -1
    scanned: int = 0


def compile_pattern(pattern: str, regex: bool, ignore_case: bool) -> Any:
    """The compiled pattern (MULTILINE; IGNORECASE on request; literal text when ``regex`` is false).
    Raises one of ``PATTERN_ERRORS``."""
    source = pattern if regex else re.escape(pattern)
    if _regex is not None:
        return _regex.compile(source, _regex.MULTILINE | (_regex.IGNORECASE if ignore_case else 0))
    return re.compile(source, re.MULTILINE | (re.IGNORECASE if ignore_case else 0))


def find_matches(text: str, compiled: Any, max_results: int, window: int, max_chars: int,
                 timeout: float) -> FindResult:
    """The first ``max_results`` matches, each with ``window`` chars either side, their texts
    together capped at ``max_chars``. Scanning stops one match past the last returned, so the
    cost is that of the hits, not of the whole text."""
    n = len(text)
    result = FindResult(scanned=n)
    budget = max_chars
    if _regex is not None and isinstance(compiled, _regex.Pattern):
        matches = compiled.finditer(text, concurrent=True, timeout=timeout)
    else:
        matches = compiled.finditer(text)
    while True:
        try:
            m = next(matches, None)
        except TimeoutError as exc:
            raise PatternTimeout(f"the pattern ran for {timeout:g} s without finishing") from exc
        if m is None:
            return result
        if len(result.hits) == max_results or budget <= 0:
            result.truncated, result.next_start, result.scanned = True, m.start(), m.end()
            return result
        s, e = m.span()
        lo, hi = max(0, s - window), min(n, e + window)
        snippet = text[lo : min(hi, lo + budget)]
        budget -= len(snippet)
        result.hits.append(Hit(s, e, lo, snippet, lo + len(snippet) < hi))
