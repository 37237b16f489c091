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

__all__ = [
    "MAX_EXPANDED",
    "MAX_PATTERN_CHARS",
    "MAX_REPEAT",
    "PATTERN_ERRORS",
    "FindResult",
    "Hit",
    "PatternTimeout",
    "PatternTooLarge",
    "check_pattern_size",
    "compile_pattern",
    "find_matches",
]

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


# Bounds on what a pattern may make the engine build. A compiled pattern grows with its
# repeats multiplied out: "(?:a{10000}){1500}" took ~4 GB to compile. 100,000 expanded items
# compile in ~0.15 s and under 10 MB; no search a model needs comes near.
MAX_PATTERN_CHARS = 10_000
MAX_REPEAT = 100_000
MAX_EXPANDED = 100_000

_COUNTED = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")


class PatternTooLarge(ValueError):
    """The pattern would compile to more than the engine may build; ``msg`` and ``pos`` as in ``re.error``."""

    def __init__(self, msg: str, pos: int | None = None) -> None:
        super().__init__(msg if pos is None else f"{msg} at position {pos}")
        self.msg = msg
        self.pos = pos


def check_pattern_size(pattern: str) -> None:
    """Raise ``PatternTooLarge`` when ``pattern`` is too long or its counted repeats, multiplied
    out through nested groups, exceed ``MAX_EXPANDED`` items. A scan of the text only (no
    compiling), so it is safe anywhere; it over-counts rather than under-counts."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternTooLarge(f"the pattern is {len(pattern):,} characters; the limit is {MAX_PATTERN_CHARS:,}")
    # One frame per open group: [size of the finished alternatives (max), size of the current one,
    # size of its last item (what a quantifier multiplies)].
    stack: list[list[int]] = [[0, 0, 0]]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        frame = stack[-1]
        if c == "\\":
            i += 2
            if i <= n and pattern[i - 1] in "pPNxuU" and i < n and pattern[i] == "{":
                close = pattern.find("}", i)
                i = n if close < 0 else close + 1
            item = 1
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            item = 1
        elif c == "(":
            if pattern.startswith("(?#", i):
                close = pattern.find(")", i)
                i = n if close < 0 else close + 1
                continue
            stack.append([0, 0, 0])
            i += 1
            continue
        elif c == ")" and len(stack) > 1:
            done = stack.pop()
            item = max(done[0], done[1], 1)
            frame = stack[-1]
            i += 1
        elif c == "|":
            frame[0], frame[1], frame[2] = max(frame[0], frame[1]), 0, 0
            i += 1
            continue
        elif c == "{" and (m := _COUNTED.match(pattern, i)) and (m.group(1) or m.group(3)):
            low = int(m.group(1) or 0)
            high = int(m.group(3)) if m.group(3) else (low if not m.group(2) else low + 1)
            count = max(low, high, 1)
            if count > MAX_REPEAT:
                raise PatternTooLarge(f"the repeat count {count:,} is above the limit of {MAX_REPEAT:,}", i)
            frame[1] += frame[2] * (count - 1)
            frame[2] *= count
            i = m.end()
            if frame[1] > MAX_EXPANDED:
                raise PatternTooLarge(
                    f"its repeats multiply out to over {MAX_EXPANDED:,} items (nested counted repeats such as "
                    "(?:a{100}){100} multiply); use smaller counts, or match once and count in code", i)
            continue
        elif c in "*+?":
            i += 1
            continue  # repeats without a count loop over one copy: nothing is multiplied out
        else:
            item = 1  # a literal (or a group's "?:" prefix, over-counted on purpose)
            i += 1
        frame[1] += item
        frame[2] = item
        if frame[1] > MAX_EXPANDED:
            raise PatternTooLarge(f"it expands to over {MAX_EXPANDED:,} items", i)


def compile_pattern(pattern: str, regex: bool, ignore_case: bool) -> Any:
    """The compiled pattern (MULTILINE; IGNORECASE on request; literal text when ``regex`` is false),
    never kept in the engine's cache. Raises ``PatternTooLarge`` or one of ``PATTERN_ERRORS``."""
    if regex:
        check_pattern_size(pattern)
    elif len(pattern) > MAX_PATTERN_CHARS:
        raise PatternTooLarge(f"the text is {len(pattern):,} characters; the limit is {MAX_PATTERN_CHARS:,}")
    source = pattern if regex else re.escape(pattern)
    if _regex is not None:
        return _regex.compile(source, _regex.MULTILINE | (_regex.IGNORECASE if ignore_case else 0),
                              cache_pattern=False)
    # ``re`` caches every pattern it compiles; only the size check protects this fallback.
    return re.compile(source, re.MULTILINE | (re.IGNORECASE if ignore_case else 0))


def find_matches(text: str, compiled: Any, max_results: int, window: int, max_chars: int,
                 timeout: float, start: int = 0) -> FindResult:
    """The first ``max_results`` matches at or after char ``start`` (anchors still see the text
    before it), each with ``window`` chars either side, their texts together capped at
    ``max_chars``. Scanning stops one match past the last returned, so the cost is that of the
    hits, not of the whole text."""
    n = len(text)
    result = FindResult(scanned=n)
    budget = max_chars
    if _regex is not None and isinstance(compiled, _regex.Pattern):
        matches = compiled.finditer(text, start, concurrent=True, timeout=timeout)
    else:
        matches = compiled.finditer(text, start)
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
