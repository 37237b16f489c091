"""The contexts loaded into one session, and the read-only views on them (peek, search).

Contexts can be hundreds of MB, and the server does not keep their text: the sandbox worker
holds the only copy in memory (and the sandbox host a copy on disk to reload a worker from).
What the server keeps per context is small: its size, a head and a tail for previews, and its
line index (an ``array`` of line-start offsets, 4 bytes per line below 4 Gi chars, built once at
load).
``peek`` and ``search`` read through a ``TextSource`` (in a session: slices from the context's
file, searches in the worker; in tests, a plain string) and cost what their slice or their hits
cost, never the size of the text.
"""

from __future__ import annotations

import re
import threading
import time
from array import array
from concurrent.futures import Future
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Protocol

import anyio

from rlm_mcp.errors import InvalidInput, InvalidPattern, InvalidRange, UnknownContext
from rlm_mcp.shaping import fitting_prefix, json_chars
from sandbox import PatternError, SearchTimeout, textops
from sandbox.spill import char_start as _char_start
from sandbox.textops import FindResult

__all__ = [
    "MAX_CHARS_LIMIT",
    "MAX_RESULTS_LIMIT",
    "WINDOW_LIMIT",
    "Context",
    "ContextStore",
    "StrSource",
    "TextSource",
    "check_name",
    "check_pattern",
    "line_starts",
    "peek",
    "search",
]

MAX_RESULTS_LIMIT = 1000
WINDOW_LIMIT = 5000
MAX_CHARS_LIMIT = 10_000_000  # a sanity bound; callers pass their own output cap
EDGE = 2000  # chars of head and tail kept for previews

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_NEWLINE = re.compile("\n")
_NEWLINE_BYTES = re.compile(b"\n")
_UNITS = ("chars", "lines")


class TextSource(Protocol):
    """Where a context's text is read from."""

    async def slice(self, start: int, end: int) -> str: ...

    async def find(self, pattern: str, *, regex: bool, ignore_case: bool, max_results: int, window: int,
                   max_chars: int, timeout: float, start: int = 0) -> FindResult: ...


class StrSource:
    """A text in this process (tests, and anything that has the string at hand)."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def slice(self, start: int, end: int) -> str:
        return self.text[start:end]

    async def find(self, pattern: str, *, regex: bool, ignore_case: bool, max_results: int, window: int,
                   max_chars: int, timeout: float, start: int = 0) -> FindResult:
        # Compiles in this process: for tests and tools, never for a server's contexts (their
        # source, the session's worker, compiles where a pattern cannot hurt the server).
        compiled = textops.compile_pattern(pattern, regex, ignore_case)
        return await anyio.to_thread.run_sync(
            textops.find_matches, self.text, compiled, max_results, window, max_chars, timeout, start
        )


def _offsets(end: int) -> str:
    """The array type code for offsets up to ``end``: 4 bytes each while they fit, else 8."""
    return "I" if end < 2**32 else "q"


def file_line_starts(f: BinaryIO, chars: int, block: int = 1 << 20) -> array:
    """``line_starts`` of the UTF-8 text in ``f`` (``chars`` long), read a block at a time: ASCII
    blocks are searched as bytes (their offsets are the chars'), others decoded first."""
    starts = array(_offsets(chars), [0] if chars else [])
    done = 0
    carry = b""
    while data := carry + f.read(block):
        time.sleep(0)  # a block at a time: the event loop (and others) get the GIL in between
        cut = len(data) if len(data) == len(carry) else _char_start(data)
        data, carry = data[:cut], data[cut:]
        if data.isascii():
            if done:
                starts.extend(m.end() + done for m in _NEWLINE_BYTES.finditer(data))
            else:
                starts.extend(map(re.Match.end, _NEWLINE_BYTES.finditer(data)))
            done += len(data)
        else:
            text = data.decode("utf-8", "surrogatepass")
            starts.extend(m.end() + done for m in _NEWLINE.finditer(text))
            done += len(text)
    if len(starts) > 1 and starts[-1] == done:
        starts.pop()  # a trailing newline ends the last line, starts none
    return starts


def line_starts(text: str, offset: int = 0) -> array:
    """Offsets (plus ``offset``) where the lines of ``text`` start: 0, then after each "\n"
    except a trailing one. Measured fastest with the least memory: ~0.35 s and 12 MB for 3M lines."""
    starts = array(_offsets(offset + len(text)), [offset] if text else [])
    if offset:
        starts.extend(m.end() + offset for m in _NEWLINE.finditer(text))
    else:
        starts.extend(map(re.Match.end, _NEWLINE.finditer(text)))
    if len(starts) > 1 and starts[-1] == len(text) + offset:
        starts.pop()  # a trailing newline ends the last line, starts none
    return starts


@dataclass(eq=False)
class Context:
    """What the server knows of one loaded text. ``files`` lists the paths or URL it came from;
    ``skipped`` the files left out, as ``{path, reason}`` (binary, unreadable, broken or encrypted
    documents). ``tokens`` is None until counted;
    ``token_count`` says what it is: ``"counting"`` (an estimate while the exact count runs in the
    background), ``"exact"`` (counted with ``token_encoding``) or ``"estimate"`` (chars / 4, for
    good). ``generation`` tells one load of a name from the next, so that a count that finishes
    late is never put on the text that replaced it."""

    name: str
    chars: int = 0
    head: str = field(default="", repr=False)
    tail: str = field(default="", repr=False)
    files: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    tokens: int | None = None
    token_encoding: str | None = None
    token_count: str = "estimate"
    generation: int = 0
    starts: array = field(default_factory=lambda: array("I"), repr=False)
    ends_with_newline: bool = False
    # A line index still being built from the context's file (``from_file``), and the line
    # count known meanwhile; ``ready()`` waits for the index.
    pending_starts: Future[array] | None = field(default=None, repr=False)
    line_count: int = 0

    @classmethod
    def from_file(cls, name: str, f: BinaryIO, chars: int, lines: int, head: str, tail: str, ends_with_newline: bool,
                  files: Iterable[str] = ()) -> Context:
        """A context whose text is the UTF-8 file ``f`` (already checked: ``chars``, ``lines``, its
        edges). Its line index is built from ``f`` on a thread of its own (~0.5 s per 200 MB), so
        that the load need not wait for it; ``f`` is closed when it is done."""
        pending: Future[array] = Future()

        def build() -> None:
            try:
                with f:
                    pending.set_result(file_line_starts(f, chars))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the index
                pending.set_exception(exc)

        threading.Thread(target=build, name="rlm-line-index", daemon=True).start()
        return cls(name=name, chars=chars, head=head, tail=tail, files=list(files), pending_starts=pending,
                   line_count=lines, ends_with_newline=ends_with_newline)

    async def ready(self) -> Context:
        """This context once its line index is built (at once unless ``from_file`` made it)."""
        pending = self.pending_starts
        if pending is not None:
            self.starts = await anyio.to_thread.run_sync(pending.result)
            self.pending_starts = None
        return self

    @classmethod
    def from_text(cls, name: str, text: str, files: Iterable[str] = (), skipped: Iterable[dict[str, str]] = ()
                  ) -> Context:
        """Index ``text`` (about 0.4 s per 200 MB: run it off the event loop)."""
        return cls(name=name, chars=len(text), head=text[:EDGE], tail=text[-EDGE:], files=list(files),
                   skipped=list(skipped), starts=line_starts(text), ends_with_newline=text.endswith("\n"))

    def appended(self, text: str, files: Iterable[str] = (), skipped: Iterable[dict[str, str]] = ()) -> Context:
        """This context with ``text`` added to its end (a new object; this one is left as it was)."""
        files, skipped = [*self.files, *files], [*self.skipped, *skipped]
        if not text:
            return replace(self, files=files, skipped=skipped)
        more = line_starts(text, self.chars)
        starts = array(more.typecode, self.starts)
        if self.chars and not self.ends_with_newline:
            more = more[1:]  # the old last line goes on into the new text
        starts.extend(more)
        tail = (self.tail + text)[-EDGE:]
        head = self.head if len(self.head) >= EDGE else (self.head + text)[:EDGE]
        return replace(self, chars=self.chars + len(text), head=head, tail=tail, files=files, skipped=skipped,
                       tokens=None, token_encoding=None, starts=starts, ends_with_newline=text.endswith("\n"))

    @property
    def lines(self) -> int:
        """Lines split at "\n"; a last line without a newline counts, an empty text has 0."""
        return self.line_count if self.pending_starts is not None else len(self.starts)

    def preview(self, edge: int) -> str:
        """The text if it is short, else its first and last ``edge`` chars around a marker."""
        if edge > EDGE:
            raise ValueError(f"a preview shows at most {EDGE} chars at each end")
        if self.chars <= 2 * edge:
            return self.head if self.chars <= len(self.head) else self.head + self.tail[len(self.head) - self.chars:]
        return f"{self.head[:edge]}\n[... {self.chars - 2 * edge:,} characters ...]\n{self.tail[-edge:]}"

    def line_of(self, offset: int) -> int:
        """The line holding char ``offset``, counted from 0 as peek(unit="lines") counts them
        (``offset == chars`` is on the last line)."""
        if not 0 <= offset <= self.chars:
            raise InvalidRange(f"Offset {offset} is outside context {self.name!r}, which has chars 0..{self.chars}.")
        return max(0, bisect_right(self.starts, offset) - 1)

    def line_start(self, line: int) -> int:
        """Char offset where line ``line`` (from 0) starts; ``lines`` gives the text's end."""
        starts = self.starts
        if line == len(starts):
            return self.chars
        if not 0 <= line < len(starts):
            raise InvalidRange(f"Line {line} is outside context {self.name!r}, which has lines 0..{len(starts) - 1}.")
        return starts[line]


def check_name(name: object) -> None:
    """Refuse a context name that is not 1-128 letters, digits, '_', '-' or '.'."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"Invalid context name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (e.g. 'context', 'docs_2024')."
        )


class ContextStore:
    """The contexts of one session, by name."""

    def __init__(self) -> None:
        self._contexts: dict[str, Context] = {}

    def put(self, ctx: Context) -> Context:
        """Store ``ctx`` under its name, replacing any context of that name."""
        check_name(ctx.name)
        self._contexts[ctx.name] = ctx
        return ctx

    def get(self, name: str) -> Context:
        try:
            return self._contexts[name]
        except KeyError:
            loaded = ", ".join(repr(n) for n in self._contexts) or "none"
            raise UnknownContext(
                f"No context named {name!r}. Loaded contexts: {loaded}. "
                "Load one with load_context first, or pass one of the loaded names."
            ) from None

    def current(self, name: str) -> Context | None:
        """The context stored under ``name`` now, or None (safe from any thread)."""
        return self._contexts.get(name)

    def names(self) -> list[str]:
        return list(self._contexts)

    def drop(self, name: str) -> None:
        self.get(name)  # same error as get for a missing name
        del self._contexts[name]

    def clear(self) -> None:
        self._contexts.clear()

    @property
    def total_chars(self) -> int:
        return sum(c.chars for c in self._contexts.values())

    def __contains__(self, name: object) -> bool:
        return name in self._contexts

    def __len__(self) -> int:
        return len(self._contexts)

    def __iter__(self):
        return iter(list(self._contexts.values()))


def _check_int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer from {low} to {high}, not {value!r}.")
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be from {low} to {high}; got {value}.")
    return value


def _normalize(value: int, total: int, what: str, name: str, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer (negative counts from the end), not {value!r}.")
    resolved = value + total if value < 0 else value
    if not 0 <= resolved <= total:
        raise InvalidRange(
            f"{what}={value} is out of range: context {name!r} has {total} {unit}, so {what} must be "
            f"from {-total} to {total} (negative counts from the end)."
        )
    return resolved


# Room kept for what a cut peek adds to its keys: char offsets and a hint.
_PEEK_EXTRA = 300


async def peek(
    ctx: Context,
    source: TextSource,
    start: int = 0,
    end: int | None = None,
    unit: str = "chars",
    max_chars: int = 20_000,
) -> dict[str, Any]:
    """Chars ``start..end`` or 0-based lines ``start..end`` (end exclusive; an ``end`` past the
    data is clamped), capped at ``max_chars``. ``end`` in the result is where the text served
    stops, so the next call can start there; ``truncated`` says the cap cut the request short. The
    result, as JSON text, stays within ``max_chars``."""
    if unit not in _UNITS:
        raise InvalidInput(f"unit must be 'chars' or 'lines', not {unit!r}.")
    _check_int(max_chars, "max_chars", 1, MAX_CHARS_LIMIT)
    if unit == "lines":
        await ctx.ready()
    total = ctx.chars if unit == "chars" else ctx.lines
    first = _normalize(start, total, "start", ctx.name, unit)
    if end is None:
        stop = total
    else:
        if isinstance(end, bool) or not isinstance(end, int):
            raise InvalidInput(f"end must be an integer or null (to read to the end), not {end!r}.")
        stop = min(end + total if end < 0 else end, total)
        if stop < first:
            raise InvalidRange(
                f"end={end} is before start={start} in context {ctx.name!r} ({total} {unit}); "
                "pass an end greater than start, or null to read to the end."
            )
    # The result must fit the cap as JSON text (where a newline takes two characters), keys and hint too.
    envelope = json_chars(_peek_result(ctx, first, stop, unit, "", total, stop)) + _PEEK_EXTRA
    room = max(max_chars - envelope, 1)
    if unit == "chars":
        text = await source.slice(first, min(stop, first + room))
        text = text[: fitting_prefix(text, room)]
        served = first + len(text)
        result = _peek_result(ctx, first, served, unit, text, total, stop)
        if served < stop:
            result["hint"] = (
                f"Output capped at {max_chars} chars; continue with start={served}"
                f"{'' if end is None else f', end={end}'}."
            )
        return result

    starts = ctx.starts
    char_start = ctx.line_start(first)
    char_stop = ctx.line_start(stop)
    text = await source.slice(char_start, min(char_stop, char_start + room))
    fits = fitting_prefix(text, room)
    if char_start + fits >= char_stop:
        served, char_end = stop, char_stop
    else:
        # Serve whole lines only, as many as fit, so "end" is exact for the next call: the last
        # line start at or before the cap ends the complete lines that fit.
        served = bisect_right(starts, char_start + fits) - 1
        char_end = starts[served]
    hint = None
    if served == first and stop > first:
        # A single line longer than the cap: serve its beginning and say how to read the rest.
        char_end = char_start + fits
        hint = (
            f"Line index {first} (0-based) alone is longer than {max_chars} chars; read the rest "
            f"of it with unit='chars', start={char_end}, end={ctx.line_start(first + 1)}."
        )
    elif served < stop:
        hint = (
            f"Output capped at {max_chars} chars; continue with unit='lines', start={served}"
            f"{'' if end is None else f', end={end}'}."
        )
    result = _peek_result(ctx, first, served, unit, text[: char_end - char_start], total, stop)
    result.update(char_start=char_start, char_end=char_end)
    if hint:
        result["hint"] = hint
    return result


def _peek_result(
    ctx: Context, start: int, end: int, unit: str, text: str, total: int, wanted: int
) -> dict[str, Any]:
    return {
        "name": ctx.name,
        "start": start,
        "end": end,
        "unit": unit,
        "text": text,
        "total": total,
        "truncated": end < wanted,
    }


def check_pattern(pattern: Any, regex: bool = True, ignore_case: bool = False) -> None:
    """Refuse an empty or oversized pattern with a message that says how to fix it. The pattern is
    not compiled here: compiling runs in the session's worker, because a small pattern can make
    the engine build gigabytes ("(?:a{10000}){1500}"), and the server must not be the one to."""
    if not isinstance(pattern, str) or pattern == "":
        raise InvalidInput("pattern must be a non-empty string (a regex, or literal text with regex=false).")
    try:
        if regex:
            textops.check_pattern_size(pattern)
        elif len(pattern) > textops.MAX_PATTERN_CHARS:
            raise textops.PatternTooLarge(f"the text is {len(pattern):,} characters; "
                                          f"the limit is {textops.MAX_PATTERN_CHARS:,}")
    except textops.PatternTooLarge as exc:
        raise _invalid_pattern(pattern, exc.msg, exc.pos) from exc


def _invalid_pattern(pattern: str, msg: str, pos: int | None) -> InvalidPattern:
    where = f" at position {pos}" if pos is not None else ""
    shown = pattern if len(pattern) <= 200 else pattern[:200] + "..."
    return InvalidPattern(
        f"Invalid regular expression {shown!r}: {msg}{where}. Fix the pattern (Python re syntax), or pass "
        "regex=false to search for the literal text."
    )


async def search(
    ctx: Context,
    source: TextSource,
    pattern: str,
    regex: bool = True,
    ignore_case: bool = False,
    max_results: int = 20,
    window: int = 200,
    max_chars: int = 20_000,
    timeout: float = 10.0,
    start: int = 0,
) -> dict[str, Any]:
    """The first ``max_results`` matches of ``pattern`` (a Python regex with MULTILINE, so ^ and $
    match at line ends; or a literal string when ``regex`` is false) at or after char ``start``,
    each with ``window`` chars either side and its line counted from 0. Scanning stops after one
    match past the last returned, so the cost is that of the hits, not of the whole context. The
    result, as JSON text, stays within ``max_chars``: hits that do not fit are left for a next call
    from ``next_start``.

    Matching uses the ``regex`` package, not ``re``: a client's catastrophic pattern must stop at
    ``timeout`` seconds, and ``re`` cannot be interrupted."""
    check_pattern(pattern, regex, ignore_case)
    _check_int(max_results, "max_results", 1, MAX_RESULTS_LIMIT)
    _check_int(window, "window", 0, WINDOW_LIMIT)
    _check_int(max_chars, "max_chars", 1, MAX_CHARS_LIMIT)
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= ctx.chars:
        raise InvalidInput(f"start must be a char offset from 0 to {ctx.chars} (the next_start of an earlier "
                           f"search), not {start!r}.")
    try:
        found = await source.find(pattern, regex=regex, ignore_case=ignore_case, max_results=max_results,
                                  window=window, max_chars=max_chars, timeout=timeout, start=start)
    except PatternError as exc:
        raise _invalid_pattern(pattern, exc.msg, exc.pos) from exc
    except (*textops.PATTERN_ERRORS, textops.PatternTooLarge) as exc:  # a StrSource compiles in this process
        raise _invalid_pattern(pattern, getattr(exc, "msg", str(exc)), getattr(exc, "pos", None)) from exc
    except (textops.PatternTimeout, SearchTimeout) as exc:
        raise InvalidPattern(
            f"The pattern {pattern!r} ran for {timeout:g} s without finishing (catastrophic backtracking?). "
            "Simplify it (avoid nested quantifiers like (a+)+), anchor it, or pass regex=false."
        ) from exc
    await ctx.ready()
    matches: list[dict[str, Any]] = []
    for h in found.hits:
        hit: dict[str, Any] = {"start": h.start, "end": h.end, "line": ctx.line_of(h.start), "text": h.text}
        if h.text_truncated:
            hit["text_truncated"] = True
        matches.append(hit)
    result: dict[str, Any] = {
        "name": ctx.name,
        "pattern": pattern,
        "matches": matches,
        "truncated": found.truncated,
        "total_scanned": found.scanned,
    }
    if found.truncated:
        result["next_start"] = found.next_start
    _fit_search(result, max_chars)
    if result["truncated"]:
        result["hint"] = _search_hint(result, max_results, window)
    return result


# Room kept for the hint and next_start that a cut result gains.
_HINT_ROOM = 400


def _fit_search(result: dict[str, Any], max_chars: int) -> None:
    """Keep the most hits whose JSON text fits ``max_chars``; the first hit at least, its text cut
    if need be, so that a search always makes progress. Dropped hits are left to ``next_start``."""
    matches = result["matches"]
    if not matches or json_chars(result) <= max_chars:
        return
    room = max(max_chars - _HINT_ROOM, 1)
    kept, lo, hi = 1, 1, len(matches)  # the largest count that fits, by halving: each try is one dump
    while lo <= hi:
        mid = (lo + hi) // 2
        if json_chars({**result, "matches": matches[:mid]}) <= room:
            kept, lo = mid, mid + 1
        else:
            hi = mid - 1
    if kept < len(matches):
        result.update(truncated=True, next_start=matches[kept]["start"], matches=matches[:kept])
    first = result["matches"][0]
    over = json_chars(result) - room
    if over > 0:  # one hit alone too long (escapes count double): cut its text, say so
        first["text"] = first["text"][: max(0, len(first["text"]) - over)]
        while first["text"] and json_chars(result) > room:
            first["text"] = first["text"][: len(first["text"]) * 3 // 4]
        first["text_truncated"] = True


def _search_hint(result: dict[str, Any], max_results: int, window: int) -> str:
    """What the next call should be: the continuation always works; a bigger count only when the
    count, not the output cap, was what stopped the search."""
    at = result["next_start"]
    hint = f"More matches exist, the next at char {at}: call search again with start={at} to continue."
    if len(result["matches"]) < max_results:
        hint += (" The output cap stopped this page" + (f"; a smaller window (now {window}) fits more hits per call"
                                                        if window > 40 else "") + ".")
    elif max_results < MAX_RESULTS_LIMIT:
        hint += f" Or raise max_results (now {max_results}, up to {MAX_RESULTS_LIMIT})."
    return hint + " To count or aggregate every match, use exec_python with re."
