"""``--cache-sub-queries``: an identical sub-query is answered once per session.

Identical means the same backend, model, system prompt, prompt and max tokens (hashed:
prompts can be 400k characters). Concurrent identical calls share the one in flight;
its failure is theirs too, and failures are not kept (the next identical call asks
again). A cancelled call leaves nothing behind: one of its waiters asks in its place.
Off by default, because code may ask the same thing twice on purpose (sampling at a
temperature, a vote). Answers kept are bounded in total size; the oldest go first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from .errors import RlmError, SubQueryFailed

__all__ = ["SubQueryCache"]

_MAX_CHARS = 50_000_000


@dataclass(eq=False)
class _Flight:
    done: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None


class SubQueryCache:
    def __init__(self, max_chars: int = _MAX_CHARS) -> None:
        self.max_chars = max_chars
        self.hits = 0
        self.misses = 0
        self._answers: OrderedDict[str, str] = OrderedDict()
        self._chars = 0
        self._flights: dict[str, _Flight] = {}

    @staticmethod
    def key(backend: str, model: str | None, system: str | None, prompt: str, max_tokens: int) -> str:
        digest = hashlib.sha256()
        for part in (backend, model or "", system or "", prompt, str(max_tokens)):
            data = part.encode("utf-8", errors="surrogatepass")
            digest.update(len(data).to_bytes(8, "big") + data)  # lengths first: no two splits collide
        return digest.hexdigest()

    async def run(self, key: str, call: Callable[[], Awaitable[str]]) -> tuple[str, bool]:
        """The answer for ``key`` and whether it came without a call of this one's own."""
        while True:
            if key in self._answers:
                self.hits += 1
                self._answers.move_to_end(key)
                return self._answers[key], True
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise SubQueryFailed(flight.error)
            # Answered (the loop finds it) or cancelled (the loop finds nothing: this call asks).
        flight = self._flights[key] = _Flight()
        self.misses += 1
        try:
            text = await call()
            self._keep(key, text)  # before the waiters wake: they find it
        except RlmError as exc:
            flight.error = str(exc)
            raise
        finally:
            del self._flights[key]
            flight.done.set()
        return text, False

    def _keep(self, key: str, text: str) -> None:
        if len(text) > self.max_chars:
            return
        self._answers[key] = text
        self._chars += len(text)
        while self._chars > self.max_chars:
            _, dropped = self._answers.popitem(last=False)
            self._chars -= len(dropped)

    def status(self) -> dict[str, Any]:
        return {"enabled": True, "hits": self.hits, "misses": self.misses, "answers_kept": len(self._answers),
                "in_flight": len(self._flights)}
