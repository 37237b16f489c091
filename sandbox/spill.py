"""A session's contexts on disk, so that only the worker holds them in memory.

A context can be hundreds of MB. The worker needs it as a ``str``; the host needs it only to
give a fresh worker its contexts back (after a crash, a timeout, a reset or an idle stop). Kept
as a second ``str`` in the server that doubled the memory of every session; kept here it costs
disk (and page cache the kernel can drop). Each context is one UTF-8 file (lone surrogates kept
with ``surrogatepass``) in a private temporary folder that ``close`` removes. The folder's name
carries the owner's pid, so that ``sweep_stale`` can remove what a killed process left behind.

Slices are read from these files too (``read``), so that reading a piece of a context never
waits for the worker, which may be busy running code for minutes. Marks taken while writing
map char offsets to byte offsets: ASCII text maps one to one; other text has a mark every
``STEP`` chars, so a slice decodes at most ``STEP`` chars it does not return.
"""

from __future__ import annotations

import codecs
import itertools
import os
import shutil
import sys
import tempfile
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["FileScan", "NotUtf8", "SpillStore", "SpilledText", "char_start", "sweep_stale"]

PREFIX = "rlm-contexts-"

CHUNK = 1024 * 1024  # small pieces: glibc keeps freed 8 MB buffers in the heap (measured +30 MB)
STEP = 64 * 1024  # chars between two marks of a non-ASCII text
_COMPACT = sys.getsizeof("\xe9") - 2  # the header of a str that is not ASCII: size = header + (n + 1) * width


@dataclass(frozen=True)
class Marks:
    """Where chars ``chars[i]`` start in the file (``nbytes[i]``); ``ascii[i]`` says that the text
    up to the next mark is ASCII, so any offset in it maps by adding."""

    chars: array = field(default_factory=lambda: array("Q"))
    nbytes: array = field(default_factory=lambda: array("Q"))
    ascii: bytearray = field(default_factory=bytearray)

    def shifted(self, chars: int, nbytes: int) -> Marks:
        return Marks(array("Q", (c + chars for c in self.chars)), array("Q", (b + nbytes for b in self.nbytes)),
                     bytearray(self.ascii))

    def __add__(self, other: Marks) -> Marks:
        return Marks(self.chars + other.chars, self.nbytes + other.nbytes, self.ascii + other.ascii)


class NotUtf8(ValueError):
    """A file given to ``SpillStore.copy_file`` is not strict UTF-8 (or has a BOM): the caller
    decodes it the slow way, with replacements."""


@dataclass
class FileScan:
    """What one pass over a copied file learned: enough to describe the text without holding it."""

    lines: int = 0  # newline-separated lines, as ``Context.lines`` counts them
    head: str = ""
    tail: str = ""
    ends_with_newline: bool = False
    ascii: bool = True


@dataclass(frozen=True)
class SpilledText:
    """One text on disk: where, and its size as chars, UTF-8 bytes and as a ``str`` in memory."""

    path: Path
    chars: int
    nbytes: int
    str_size: int
    marks: Marks = field(default_factory=Marks, repr=False)


class SpillStore:
    """Named texts on disk. One session uses it; its file work runs on worker threads. Writes and
    commits come one at a time (the session serialises loads), while reads may overlap them: a
    commit publishes the new entry before it removes the old file, and a read that finds its file
    gone retries with the current entry."""

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        self._parent = parent
        self._dir: Path | None = None
        self._texts: dict[str, SpilledText] = {}
        self._serial = itertools.count()
        self.closed = False

    @property
    def location(self) -> Path:
        """The folder this store's private directory is (or will be) made in."""
        return Path(self._parent) if self._parent is not None else Path(tempfile.gettempdir())

    @property
    def made(self) -> Path | None:
        """This store's private directory if it has been made yet (``directory`` makes it)."""
        return self._dir

    @property
    def directory(self) -> Path:
        if self.closed:
            raise RuntimeError("this spill store is closed")
        if self._dir is None:
            prefix = f"{PREFIX}{os.getpid()}-"
            self._dir = Path(tempfile.mkdtemp(prefix=prefix, dir=self._parent))  # mode 0700
        return self._dir

    def write(self, text: str) -> SpilledText:
        """Write ``text`` to a new file (not yet a named context; see ``commit``)."""
        path = self.directory / f"part-{next(self._serial)}.txt"
        nbytes = 0
        marks = Marks()
        try:
            with open(path, "wb") as f:
                if text.isascii():
                    nbytes = len(text)
                    marks.chars.append(0), marks.nbytes.append(0), marks.ascii.append(1)
                    for i in range(0, len(text), CHUNK):
                        f.write(text[i : i + CHUNK].encode("ascii"))
                else:
                    for i in range(0, len(text), STEP):
                        marks.chars.append(i), marks.nbytes.append(nbytes), marks.ascii.append(0)
                        nbytes += f.write(text[i : i + STEP].encode("utf-8", "surrogatepass"))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return SpilledText(path, len(text), nbytes, sys.getsizeof(text), marks)

    def commit(self, name: str, part: SpilledText, append: bool) -> SpilledText:
        """Make ``part`` the context ``name`` (replacing it), or add it to the end of it."""
        old = self._texts.get(name)
        if append and old is not None:
            with open(old.path, "ab") as dst, open(part.path, "rb") as src:
                shutil.copyfileobj(src, dst, CHUNK)
            part.path.unlink(missing_ok=True)
            header = sys.getsizeof("")
            # A str's size is its header plus chars times the widest char's width.
            width = max((old.str_size - header) // max(old.chars, 1), (part.str_size - header) // max(part.chars, 1), 1)
            merged = replace(old, chars=old.chars + part.chars, nbytes=old.nbytes + part.nbytes,
                             str_size=header + width * (old.chars + part.chars) + 32,
                             marks=old.marks + part.marks.shifted(old.chars, old.nbytes))
            self._texts[name] = merged
        else:
            target = self.directory / f"ctx-{next(self._serial)}.txt"
            os.replace(part.path, target)
            merged = replace(part, path=target)
            self._texts[name] = merged  # before the old file goes: a reader retries with this one
            if old is not None:
                old.path.unlink(missing_ok=True)
        return merged

    def copy_file(self, source: str | os.PathLike[str], max_bytes: int, edge: int = 2000
                  ) -> tuple[SpilledText, FileScan]:
        """Copy a UTF-8 file to a new part (see ``commit``) with the kernel's file copy, then check
        the copy (not the source, which may change meanwhile) a block at a time: strict UTF-8, its
        marks, chars, lines, first and last ``edge`` chars. Memory: a block, whatever the size.
        Raises ``NotUtf8`` (the part removed) for a file to decode the slow way, ``OverflowError``
        for one that grew past ``max_bytes`` since it was checked."""
        path = self.directory / f"part-{next(self._serial)}.txt"
        try:
            with open(source, "rb") as src, open(path, "wb") as dst:
                nbytes = _copy(src.fileno(), dst.fileno(), max_bytes + 1)
            if nbytes > max_bytes:
                raise OverflowError(nbytes)
            spilled, scan = _scan(path, nbytes, edge)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return spilled, scan

    @staticmethod
    def discard(part: SpilledText) -> None:
        part.path.unlink(missing_ok=True)

    def get(self, name: str) -> SpilledText | None:
        return self._texts.get(name)

    def items(self) -> list[tuple[str, SpilledText]]:
        return list(self._texts.items())

    def __contains__(self, name: object) -> bool:
        return name in self._texts

    def drop(self, name: str) -> None:
        spilled = self._texts.pop(name, None)
        if spilled is not None:
            spilled.path.unlink(missing_ok=True)

    def clear(self) -> None:
        for name in list(self._texts):
            self.drop(name)

    def close(self) -> None:
        """Remove every file and the folder; the store cannot be used afterwards."""
        self._texts.clear()
        self.closed = True
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def read(self, name: str, start: int, end: int) -> str | None:
        """Chars ``start:end`` of context ``name`` (clamped like a slice), or None if there is no
        such context. Blocking file reads: run it in a worker thread."""
        for _ in range(3):
            spilled = self._texts.get(name)
            if spilled is None:
                return None
            try:
                return self._read(spilled, start, end)
            except FileNotFoundError:
                if self._texts.get(name) is spilled:
                    return None  # dropped (or removed from disk) for good
                # replaced meanwhile by a load on another thread: read the new one
        return None

    @staticmethod
    def _read(spilled: SpilledText, start: int, end: int) -> str:
        start, end, _ = slice(start, end).indices(spilled.chars)
        if end <= start:
            return ""
        marks = spilled.marks
        k = bisect_right(marks.chars, start) - 1
        skip = start - marks.chars[k]
        offset = marks.nbytes[k]
        if marks.ascii[k]:
            offset, skip = offset + skip, 0
        want = end - start
        pieces: list[str] = []
        decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        with open(spilled.path, "rb") as f:
            f.seek(offset)
            while want > 0:
                block = f.read(min(CHUNK, max(4 * (skip + want), 4096)))
                text = decoder.decode(block, final=not block)
                if skip:
                    cut = min(skip, len(text))
                    text, skip = text[cut:], skip - cut
                piece = text[:want]
                pieces.append(piece)
                want -= len(piece)
                if not block:
                    break
        return "".join(pieces)

    @staticmethod
    def chunks(spilled: SpilledText) -> Iterator[bytes]:
        """The file's bytes in pieces (blocking reads)."""
        with open(spilled.path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk


def _copy(src: int, dst: int, limit: int) -> int:
    """Up to ``limit`` bytes from ``src`` to ``dst`` in the kernel (copy_file_range, else sendfile,
    else plain reads and writes); returns the bytes copied."""
    done = 0
    for call in ("copy_file_range", "sendfile"):
        fn = getattr(os, call, None)
        if fn is None:
            continue
        try:
            while done < limit:
                n = (fn(src, dst, limit - done) if call == "copy_file_range"
                     else fn(dst, src, None, min(limit - done, 1 << 30)))
                if n == 0:
                    return done
                done += n
            return done
        except OSError:
            if done:
                raise
            continue  # not supported between these files: try the next way
    while done < limit and (block := os.read(src, min(CHUNK, limit - done))):
        view = memoryview(block)
        while view:
            view = view[os.write(dst, view):]
        done += len(block)
    return done


def char_start(block: bytes) -> int:
    """Where the last (maybe incomplete) UTF-8 sequence of ``block`` starts, so a block cut there
    decodes alone: the length of ``block`` when it ends on a whole character."""
    for back in range(1, min(4, len(block)) + 1):
        byte = block[-back]
        if byte < 0x80:
            return len(block)
        if byte >= 0xC0:  # a lead byte: whole if its sequence fits in what follows it
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(block) if need <= back else len(block) - back
    return len(block)


def _scan(path: Path, nbytes: int, edge: int) -> tuple[SpilledText, FileScan]:
    """One pass over a UTF-8 file: marks (ASCII blocks map by adding; others get a mark every
    ``STEP`` chars), chars, the width of the widest char, lines, head and tail."""
    marks = Marks()
    scan = FileScan()
    chars = newlines = offset = 0
    width = 1
    tail = b""
    last = b""
    with open(path, "rb") as f:
        if f.read(3) == codecs.BOM_UTF8:
            raise NotUtf8("the file starts with a byte order mark")
        f.seek(0)
        carry = b""
        while True:
            block = carry + f.read(CHUNK)
            if not block:
                break
            cut = char_start(block) if len(block) > len(carry) else len(block)
            block, carry = block[:cut], block[cut:]
            if not block:
                raise NotUtf8("the file ends inside a character")
            newlines += block.count(b"\n")
            if block.isascii():
                if not marks.ascii or not marks.ascii[-1]:
                    marks.chars.append(chars), marks.nbytes.append(offset), marks.ascii.append(1)
                text_len = len(block)
                if len(scan.head) < edge:
                    scan.head += block[: edge - len(scan.head)].decode("ascii")
            else:
                scan.ascii = False
                try:
                    text = block.decode("utf-8")  # strict: lone surrogates are not UTF-8 either
                except UnicodeDecodeError as exc:
                    raise NotUtf8(str(exc)) from None
                width = max(width, (sys.getsizeof(text) - _COMPACT) // (len(text) + 1))
                pos = offset
                for i in range(0, len(text), STEP):
                    piece = text[i : i + STEP]
                    marks.chars.append(chars + i), marks.nbytes.append(pos), marks.ascii.append(0)
                    pos += len(piece.encode("utf-8"))
                text_len = len(text)
                if len(scan.head) < edge:
                    scan.head += text[: edge - len(scan.head)]
            tail = block[-4 * edge :] if len(block) >= 4 * edge else (tail + block)[-4 * edge :]
            last = block[-1:]
            chars += text_len
            offset += len(block)
        if carry:
            raise NotUtf8("the file ends inside a character")
    scan.tail = tail[_lead(tail):].decode("utf-8")[-edge:]
    scan.ends_with_newline = last == b"\n"
    scan.lines = newlines + (1 if chars and not scan.ends_with_newline else 0)
    str_size = sys.getsizeof("") + width * chars + (0 if scan.ascii else _COMPACT - sys.getsizeof("") + width)
    return SpilledText(path, chars, offset, str_size, marks), scan


def _lead(data: bytes) -> int:
    """The index of the first byte of ``data`` that starts a UTF-8 character."""
    for i, byte in enumerate(data[:4]):
        if byte < 0x80 or byte >= 0xC0:
            return i
    return 0


def sweep_stale(parent: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the folders of stores whose process is gone (killed before it could clean up);
    returns them. Only this user's folders are touched, and a live pid is always left alone."""
    base = Path(parent if parent is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = list(base.glob(f"{PREFIX}*-*"))
    except OSError:
        return removed
    for folder in candidates:
        pid_text = folder.name[len(PREFIX):].split("-", 1)[0]
        try:
            if not pid_text.isdigit() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except (OSError, ValueError, OverflowError):
            continue  # alive under another user (EPERM), or unreadable: not ours to judge
    return removed
