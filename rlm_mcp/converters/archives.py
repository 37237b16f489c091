"""Bundles (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz): every member under its own
``==> archive/member <==`` header, each checked as a file of a folder load would be.

Nothing is extracted to disk and nothing is trusted from the archive's own index:

- a member whose name is absolute, climbs with ``..`` or holds a NUL is skipped (``unsafe path``);
- symlinks, hard links, devices and fifos are skipped, never followed;
- a binary member is recognised from its first 8 KiB and skipped without reading the rest;
- every member is read through the capped stream (``read_capped``), so its text and the whole
  load stay under ``--max-load-mb`` whatever sizes the archive declares; a compressed tar's whole
  stream is capped too, and the members count against ``--max-files``;
- a container inside the bundle (a zip in a zip, a .gz member) is skipped: one level only;
- a broken or encrypted member is skipped with its reason; the others are read.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
import zlib
from typing import IO

from rlm_mcp.errors import TooLarge

from . import Budget, ConversionError, Converted, find
from .compressed import DECOMPRESS_ERRORS, expands_past, read_capped, read_inner

__all__ = ["convert"]

_SNIFF = 8192
_SKIP = ("__MACOSX",)  # resource forks macOS adds to every zip it makes
_MEMBER_ERRORS = (zipfile.BadZipFile, NotImplementedError, RuntimeError, tarfile.TarError, *DECOMPRESS_ERRORS)


def _unsafe(name: str) -> str | None:
    """Why a member name may not be used, or None. Backslashes count as separators (zips made on
    Windows), and a drive letter as absolute."""
    parts = name.replace("\\", "/").split("/")
    if "\0" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "unsafe path (absolute), not read"
    if ".." in parts:
        return "unsafe path ('..' leads out of the archive), not read"
    if any(p.startswith(".") and p not in ("", ".") for p in parts) or parts[0] in _SKIP:
        return "hidden"
    return None


class _CappedStream(io.RawIOBase):
    """A decompressed stream that refuses to give more than ``cap`` bytes in all."""

    def __init__(self, inner: IO[bytes], cap: int, name: str, packed: int) -> None:
        self._inner, self._cap, self._name, self._packed, self._seen = inner, cap, name, packed, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self._inner.read(len(buffer))
        self._seen += len(data)
        if self._seen > self._cap:
            raise expands_past(self._name, self._cap, self._seen, self._packed)
        buffer[: len(data)] = data
        return len(data)


class _Members:
    """What an archive gives, member by member, with the budget spent as it goes."""

    def __init__(self, kind: str, name: str, budget: Budget) -> None:
        self.out = Converted(kind)
        self.name = name
        self.budget = budget

    def skip(self, member: str, reason: str) -> None:
        self.out.skipped.append((member, reason))

    def read(self, member: str, stream: IO[bytes], packed: int) -> None:
        if self.budget.files <= 0:
            raise TooLarge(f"{self.name} has more members than the files a load may read; load fewer files, "
                           "or start the server with --max-files set higher.")
        self.budget.files -= 1
        shown = f"{self.name}/{member}"
        head = stream.read(_SNIFF)
        if find(member, head[:16]) is None and b"\0" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
            self.skip(member, "binary")
            return
        data = head + read_capped(stream, max(self.budget.chars - len(head), 0), shown, packed)
        got = read_inner(data, member, shown, self.budget)
        self.out.skipped += [(member, why) for _, why in got.skipped]
        if got.parts:
            self.out.parts.append((member, got.parts[0][1]))
            if got.converter != "text":
                self.out.converters[member] = got.converter
        self.out.replaced |= got.replaced


def _zip(data: bytes, name: str, budget: Budget) -> Converted:
    members = _Members("zip", name, budget)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ConversionError(f"broken zip ({type(exc).__name__}: {str(exc)[:120]})") from exc
    with archive:
        for info in archive.infolist():
            member = info.filename
            if info.is_dir():
                continue
            if why := _unsafe(member):
                members.skip(member, why)
            elif (info.external_attr >> 16) & 0o170000 == 0o120000:
                members.skip(member, "symlink, not followed")
            elif info.flag_bits & 0x1:
                members.skip(member, "encrypted")
            else:
                try:
                    with archive.open(info) as stream:
                        members.read(member, stream, info.compress_size)
                except _MEMBER_ERRORS as exc:
                    members.skip(member, f"broken ({type(exc).__name__}: {str(exc)[:120]})")
    return members.out


def _tar(data: bytes, name: str, budget: Budget) -> Converted:
    members = _Members("tar", name, budget)
    raw: IO[bytes] = io.BytesIO(data)
    for magic, opener in ((b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")), (b"BZh", bz2.BZ2File),
                          (b"\xfd7zXZ\x00", lzma.LZMAFile)):
        if data.startswith(magic):
            # Headers, padding and skipped members pass through the decompressor too: cap all of it.
            raw = io.BufferedReader(_CappedStream(opener(raw), budget.chars + (1 << 20), name, len(data)))
    try:
        archive = tarfile.open(fileobj=raw, mode="r|")  # a stream: members in order, nothing seeks back
        with archive:
            for info in archive:
                member = info.name
                if info.isdir():
                    continue
                if why := _unsafe(member):
                    members.skip(member, why)
                elif info.issym() or info.islnk():
                    members.skip(member, "link, not followed")
                elif not info.isreg():
                    members.skip(member, "not a regular file")
                else:
                    stream = archive.extractfile(info)
                    assert stream is not None  # a regular file always has one
                    members.read(member, stream, info.size)
    except (tarfile.TarError, *DECOMPRESS_ERRORS) as exc:
        if not members.out.parts and not members.out.skipped:
            raise ConversionError(f"broken tar ({type(exc).__name__}: {str(exc)[:120]})") from exc
        members.skip("", f"the rest is broken ({type(exc).__name__}: {str(exc)[:120]})")
    return members.out


def convert(data: bytes, name: str, budget: Budget) -> Converted:
    fmt = find(name, data[:16])
    budget.depth += 1
    try:
        return _zip(data, name, budget) if fmt is not None and fmt.name == "zip" else _tar(data, name, budget)
    finally:
        budget.depth -= 1
