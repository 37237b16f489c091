"""A fake LLM for tests and benchmarks: same interface as a real backend, with latency and errors.

It answers with ``respond(messages, system)`` (default: a short echo of the last
user message), sleeps ``latency`` seconds per call, and fails the calls whose
1-based number is in ``fail_calls`` (or every ``fail_every``-th call) with
``SubQueryFailed``, the way a real backend reports a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio

from ..errors import SubQueryFailed
from .base import ChatMessage, Completion

__all__ = ["FakeLlm"]

Responder = Callable[[list[ChatMessage], "str | None"], str]


def _echo(messages: list[ChatMessage], system: str | None) -> str:
    return f"echo: {messages[-1]['content'][:80]}"


class FakeLlm:
    name = "fake"

    def __init__(
        self,
        respond: Responder = _echo,
        *,
        latency: float = 0.0,
        fail_calls: Iterable[int] = (),
        fail_every: int = 0,
    ) -> None:
        self.respond = respond
        self.latency = latency
        self.fail_calls = set(fail_calls)
        self.fail_every = fail_every
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompts: list[str] = []

    async def complete(self, messages: list[ChatMessage], *, system: str | None, max_tokens: int) -> Completion:
        self.calls += 1
        number = self.calls
        self.prompts.append(messages[-1]["content"])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await anyio.sleep(self.latency)
            if number in self.fail_calls or (self.fail_every and number % self.fail_every == 0):
                raise SubQueryFailed(f"fake failure on call {number}")
            text = self.respond(messages, system)
        finally:
            self.in_flight -= 1
        return Completion(text=text, prompt_tokens=sum(len(m["content"]) // 4 for m in messages),
                          completion_tokens=len(text) // 4 + 1, model="fake")

    async def aclose(self) -> None:
        return None
