"""Frames between the sandbox host and its worker.

A frame is a 4-byte big-endian header length, a UTF-8 JSON header, and, when the
header has ``"payload": n``, n raw bytes after it. Bulk text (contexts, variable
slices) travels as the raw payload so it is neither JSON-escaped nor copied into
the header; nothing on either side is ever unpickled.
"""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = ["HEADER", "MAX_HEADER", "encode_header", "decode_header"]

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
