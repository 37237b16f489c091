"""Frames between the sandbox host and its worker.

A frame is a 4-byte big-endian header length, a UTF-8 JSON header, and, when the
header has ``"payload": n``, n raw bytes after it. Bulk text (contexts, variable
slices) travels as the raw payload so it is neither JSON-escaped nor copied into
the header; nothing on either side is ever unpickled.
"""

from __future__ import annotations

import io
import json
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

    def __init__(self, rfd: int, wfd: int) -> None:
        self._r = io.FileIO(rfd, "rb", closefd=True)
        self._w = io.FileIO(wfd, "wb", closefd=True)
        # Called with each header before its payload is read (to make room for it).
        self.on_header: Callable[[dict[str, Any]], None] | None = None

    def _read_exactly(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            chunk = self._r.readinto(view[got:])
            if not chunk:
                raise EOFError
            got += chunk
        return buf

    def recv(self) -> tuple[dict[str, Any], bytearray | None]:
        (size,) = HEADER.unpack(self._read_exactly(HEADER.size))
        if size > MAX_HEADER:
            raise EOFError
        message = decode_header(bytes(self._read_exactly(size)))
        payload_len = message.get("payload")
        if payload_len is None:
            return message, None
        if self.on_header is not None:
            self.on_header(message)
        return message, self._read_exactly(payload_len)

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
