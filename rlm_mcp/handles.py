"""Session handles: the names a client passes back as ``session`` to reach its RLM session.

Protocol 2026-07-28 has no protocol sessions (SEP-2567): state that outlives a call is named by a
handle the server mints. A handle is 256 random bits as URL-safe text, so it cannot be guessed;
it is the only thing that grants access to a session, so logs and traces show only ``short()``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from pydantic import Field

__all__ = ["SessionArg", "credential_digest", "mint", "same_credential", "short"]

_HANDLE_BYTES = 32
# Credentials are never stored as given: an HMAC under a key that lives only in this process.
_CREDENTIAL_KEY = secrets.token_bytes(32)


def mint() -> str:
    """A new handle: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(_HANDLE_BYTES)


def short(handle: str) -> str:
    """What logs and traces show of a handle: 8 hex digits of its SHA-256, which give nothing back."""
    return hashlib.sha256(handle.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def credential_digest(credential: str | None) -> bytes | None:
    """The transport credential (an Authorization header) a session is bound to, as an HMAC."""
    if credential is None:
        return None
    return hmac.new(_CREDENTIAL_KEY, credential.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def same_credential(bound: bytes | None, credential: str | None) -> bool:
    """Whether a request's credential is the one the session was minted under (constant time)."""
    if bound is None:
        return True
    given = credential_digest(credential)
    return given is not None and hmac.compare_digest(bound, given)


# The `session` argument of every tool that reads or changes session state (its description is
# what the model reads in the tool's input schema).
SessionArg = Annotated[str | None, Field(description=(
    "Your session's handle: the `session` field of the result of your first call. Pass it on every later "
    "call so that they all work on the same contexts and variables. Omit it only on your first call (a new "
    "session starts and its handle comes back as `session`)."))]
