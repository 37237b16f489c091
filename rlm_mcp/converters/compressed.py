"""One compressed file (.gz, .bz2, .xz): decompressed in a stream that stops at the load cap, then
read as the name under the suffix says (``notes.md.gz`` as text, ``page.html.gz`` as HTML).

A compression bomb never expands in memory past what the load may still hold: reading stops one
chunk after the cap, and the load is refused with the sizes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from typing import IO

from rlm_mcp.errors import TooLarge

from . import Budget, ConversionError, Converted, convert_file, decode, find

__all__ = ["convert", "expands_past", "read_capped", "read_inner"]

_CHUNK = 1 << 20
_OPENERS = {"gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "bzip2": bz2.BZ2File, "xz": lzma.LZMAFile}
_SUFFIXES = {"gzip": (".gz",), "bzip2": (".bz2",), "xz": (".xz",)}
# The errors a decompressor raises on data that is not what it claims.
DECOMPRESS_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


def _size(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB" if n >= 1 << 20 else f"{n / 1024:,.1f} KiB"


def read_capped(stream: IO[bytes], cap: int, name: str, packed: int) -> bytes:
    """All of ``stream``, refusing (``TooLarge``) once it passes ``cap`` bytes; ``packed`` is the
    compressed size, for the message."""
    chunks, size = [], 0
    while chunk := stream.read(min(_CHUNK, cap - size + 1)):
        size += len(chunk)
        if size > cap:
            raise expands_past(name, cap, size, packed)
        chunks.append(chunk)
    return b"".join(chunks)


def expands_past(name: str, cap: int, size: int, packed: int) -> TooLarge:
    return TooLarge(
        f"{name} expands past the load cap: more than {_size(cap)} from {_size(packed)} compressed "
        f"({size // max(packed, 1):,}x or more; a compression bomb, or simply too big). It was not "
        f"expanded further. Load a smaller file, or start the server with --max-load-mb set higher."
    )


def read_inner(data: bytes, inner: str, name: str, budget: Budget) -> Converted:
    """Bytes that came out of a container, read as their name says: a document format through its
    converter (one level of containers only), plain text decoded, binary skipped."""
    fmt = find(inner, data[:16])
    if fmt is not None and fmt.module in ("compressed", "archives") and budget.depth >= 1:
        return Converted(fmt.name, skipped=[("", f"{fmt.name} inside another container; extract it first")])
    if fmt is not None:
        budget.depth += 1
        try:
            return convert_file(fmt, data, name, budget)
        finally:
            budget.depth -= 1
    text, replaced = decode(data)
    if text is None:
        return Converted("text", skipped=[("", "binary")])
    budget.spend(len(text), name)
    return Converted("text", [("", text)], replaced=replaced)


def convert(data: bytes, name: str, budget: Budget) -> Converted:
    fmt = find(name, data[:16])
    kind = fmt.name if fmt is not None and fmt.name in _OPENERS else "gzip"
    try:
        with _OPENERS[kind](io.BytesIO(data)) as stream:
            raw = read_capped(stream, budget.chars, name, len(data))
    except DECOMPRESS_ERRORS as exc:
        raise ConversionError(f"broken {kind} data ({type(exc).__name__}: {str(exc)[:120]})") from exc
    inner = name
    for suffix in _SUFFIXES[kind]:
        if inner.lower().endswith(suffix):
            inner = inner[: -len(suffix)]
    result = read_inner(raw, inner, name, budget)
    # "gzip" for compressed text, "gzip+html" for a compressed page.
    result.converter = kind if result.converter == "text" else f"{kind}+{result.converter}"
    result.skipped = [(m, f"{r} (after {kind} decompression)") for m, r in result.skipped]
    return result
