"""Frames between the sandbox host and its worker.

A frame is a 4-byte big-endian header length, a UTF-8 JSON header, and, when the
header has ``"payload": n``, n raw bytes after it. Bulk text (contexts, variable
slices) travels as the raw payload so it is neither JSON-escaped nor copied into
the header; nothing on either side is ever unpickled.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["HEADER", "MAX_HEADER", "BlockingChannel", "encode_header", "decode_header"]

HEADER = struct.Struct(">I")
# Headers carry prompts and results, never bulk text: 256 MiB is a corrupt stream.
MAX_HEADER = 256 * 1024 * 1024


def encode_header(message: dict[str, Any], payload_len: int | None = None) -> bytes:
    """Serialise one frame header (without the payload bytes)."""
    if payload_len is not None:
        message = {**message, "payload": payload_len}
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(body)) + body


def decode_header(body: bytes) -> dict[str, Any]:
    message = json.loads(body.decode("utf-8", "surrogatepass"))
    if not isinstance(message, dict) or "op" not in message:
        raise ValueError("malformed sandbox frame")
    return message


class BlockingChannel:
    """The worker's end: plain blocking reads and writes on two file descriptors."""

    def __init__(self, rfd: int, wfd: int, bulk_fd: int | None = None) -> None:
        self._r = io.FileIO(rfd, "rb", closefd=True)
        self._w = io.FileIO(wfd, "wb", closefd=True)
        # Frames marked "bulk" (contexts) have no payload in the stream: their file arrives as a
        # descriptor on this socket, and the payload is read from it.
        self._bulk = socket.socket(fileno=bulk_fd) if bulk_fd is not None else None
        # Called with each header before its payload is read (to make room for it). It may return
        # (owner, view): the payload is then read straight into ``view`` and ``recv`` returns
        # ``owner`` as the payload (a context's str, filled in place: no second copy).
        self.on_header: Callable[[dict[str, Any]], tuple[Any, memoryview] | None] | None = None
        # Called on each block read into such a view (to check it while it is in the CPU's cache).
        self.check_target: Callable[[memoryview], None] | None = None

    def _read_exactly(self, n: int, bulk: bool = False) -> bytearray:
        buf = bytearray(n)
        self._read_into(memoryview(buf), bulk)
        return buf

    def _read_into(self, view: memoryview, bulk: bool = False,
                   check: Callable[[memoryview], None] | None = None) -> None:
        if bulk:
            self._read_file_into(view, check)
            return
        got = 0
        while got < len(view):
            chunk = self._r.readinto(view[got:])
            if not chunk:
                raise EOFError
            got += chunk
        if check is not None:
            check(view)

    def _read_file_into(self, view: memoryview, check: Callable[[memoryview], None] | None = None) -> None:
        """Read the first ``len(view)`` bytes of the file whose descriptor comes on the bulk socket,
        a block at a time, calling ``check`` on each block while it is still in the CPU's cache."""
        if self._bulk is None:
            raise EOFError
        _, fds, _, _ = socket.recv_fds(self._bulk, 1, 1)
        if not fds:
            raise EOFError
        try:
            got = 0
            while got < len(view):
                block = view[got : got + (1 << 20)]
                n = os.preadv(fds[0], [block], got)
                if not n:
                    raise EOFError  # the file is shorter than the header said
                if check is not None:
                    check(block[:n])
                got += n
        finally:
            for fd in fds:
                os.close(fd)

    def recv(self) -> tuple[dict[str, Any], Any]:
        (size,) = HEADER.unpack(self._read_exactly(HEADER.size))
        if size > MAX_HEADER:
            raise EOFError
        message = decode_header(bytes(self._read_exactly(size)))
        payload_len = message.get("payload")
        if payload_len is None:
            return message, None
        bulk = message.get("bulk") is True
        target = self.on_header(message) if self.on_header is not None else None
        if target is not None and len(target[1]) == payload_len:
            self._read_into(target[1], bulk, self.check_target)
            return message, target[0]
        return message, self._read_exactly(payload_len, bulk)

    def send(self, message: dict[str, Any], payload: bytes | None = None) -> None:
        data = encode_header(message, None if payload is None else len(payload))
        self._write_all(data)
        if payload:
            self._write_all(payload)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._w.write(view)
            view = view[written:]
