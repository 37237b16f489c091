"""Documents as text: the formats a folder load reads besides plain text.

Each family has its module (``html``, ``notebook``, ``compressed``, ...) with one function
``convert(data, name, budget) -> Converted``. ``find(name, head)`` picks the converter by the file
name's suffix, then by magic bytes; ``convert_file`` runs it and turns every failure of a file
(broken, encrypted, timed out) into a skip with its reason, so one bad file never stops a load.
Only ``TooLarge`` goes through: a file whose text would pass the load cap (a compression bomb, or
just too much) refuses the whole load, as an oversized plain file does.

Errors::

    SourceError (rlm_mcp.errors)
    ├── ConversionError     this file cannot be read as its format says (broken, encrypted, too slow)
    └── TooLarge            the text would pass the load cap; decompression stops at the cap

Everything here is blocking: call it from a worker thread (the loaders do, in batches).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from rlm_mcp.errors import SourceError, TooLarge

logger = logging.getLogger(__name__)

__all__ = [
    "Budget",
    "ConversionError",
    "Converted",
    "FORMATS",
    "convert_file",
    "decode",
    "find",
]


class ConversionError(SourceError):
    """A file that cannot be read as its format says; ``reason`` is short, for a ``skipped`` entry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Budget:
    """What one load may still produce: characters of text (the ``--max-load-mb`` cap, shared by
    every file of the load) and members of archives (the ``--max-files`` cap)."""

    chars: int
    files: int = 20_000
    depth: int = 0  # how many containers (archives, compressed files) we are inside

    def spend(self, chars: int, name: str) -> None:
        if chars > self.chars:
            raise TooLarge(
                f"{name} would pass the load cap: its text needs more than the {self.chars:,} characters "
                f"left of it. Load a smaller part, or start the server with --max-load-mb set higher."
            )
        self.chars -= chars


@dataclass
class Converted:
    """A file's text, or the reason it was skipped. Archives give one part per member:
    ``parts`` holds ``(member, text)``, ``member`` "" for the file itself."""

    converter: str
    parts: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (member, reason)
    converters: dict[str, str] = field(default_factory=dict)  # member -> converter, members of archives
    replaced: bool = False  # undecodable bytes became U+FFFD somewhere

    @property
    def chars(self) -> int:
        return sum(len(t) for _, t in self.parts)


@dataclass(frozen=True)
class _Format:
    name: str  # converter name, as reported in load_context's `converters`
    module: str  # rlm_mcp.converters.<module>, imported on first use
    suffixes: tuple[str, ...]
    magic: tuple[bytes, ...] = ()
    what: str = ""  # one line for docs/formats.md and error messages


# Longest suffix first, so ".tar.gz" wins over ".gz". Magic bytes only pick formats whose
# signature cannot be plain text; a zip without a known suffix (it could be anything) stays binary.
FORMATS: tuple[_Format, ...] = (
    _Format("tar", "archives", (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"),
            what="tar bundles, plain or compressed: each member under its own header"),
    _Format("zip", "archives", (".zip",), what="zip bundles: each member under its own header"),
    _Format("gzip", "compressed", (".gz",), (b"\x1f\x8b",), what="one gzip-compressed file"),
    # "BZh" alone starts ordinary words; a real stream has the level and the block magic after it.
    _Format("bzip2", "compressed", (".bz2",), tuple(b"BZh%d1AY&SY" % i for i in range(1, 10)),
            what="one bzip2-compressed file"),
    _Format("xz", "compressed", (".xz",), (b"\xfd7zXZ\x00",), what="one xz-compressed file"),
    _Format("pdf", "pdf", (".pdf",), (b"%PDF-",), what="text per page, each after a '--- page N ---' line"),
    _Format("docx", "docx", (".docx",), what="Word paragraphs and tables"),
    _Format("html", "html", (".html", ".htm", ".xhtml"), what="visible text; headings and list items on lines"),
    _Format("notebook", "notebook", (".ipynb",), what="Jupyter cells in order with their outputs"),
)


def find(name: str, head: bytes = b"") -> _Format | None:
    """The format of a file called ``name`` whose first bytes are ``head``; None for plain text
    (or binary, which the caller decides)."""
    lower = name.lower()
    matches = [f for f in FORMATS for s in f.suffixes if lower.endswith(s)]
    if matches:
        return max(matches, key=lambda f: max(len(s) for s in f.suffixes if lower.endswith(s)))
    return next((f for f in FORMATS if any(head.startswith(m) for m in f.magic)), None)


def _converter(fmt: _Format) -> Callable[[bytes, str, Budget], Converted]:
    return importlib.import_module(f"{__name__}.{fmt.module}").convert  # type: ignore[no-any-return]


def convert_file(fmt: _Format, data: bytes, name: str, budget: Budget) -> Converted:
    """``data`` (the bytes of ``name``) read by ``fmt``'s converter, which spends the budget as it
    produces text. A file that cannot be read comes back with no parts and one skipped entry
    (``("", reason)``); only ``TooLarge`` is raised."""
    try:
        return _converter(fmt)(data, name, budget)
    except ConversionError as exc:
        return Converted(fmt.name, skipped=[("", exc.reason)])
    except TooLarge:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile file must not stop the load: skip it, say why
        logger.warning("converter %s failed on %s", fmt.name, name, exc_info=True)
        return Converted(fmt.name, skipped=[("", f"{fmt.name} converter failed: {type(exc).__name__}: {exc}"[:300])])


def decode(data: bytes) -> tuple[str | None, bool]:
    """Bytes as text the way plain files are read: (text, had_replacements), text None if binary."""
    from rlm_mcp.loaders import _decode  # the loaders import this package

    return _decode(data)
