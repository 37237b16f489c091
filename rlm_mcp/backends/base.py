"""The interface every sub-LLM backend implements.

A backend answers a short chat (a system prompt and user/assistant turns) with
text. Failures are ``SubQueryFailed`` (or ``BackendUnavailable`` when the backend
cannot be used at all); library errors are mapped at the backend's boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

__all__ = ["ChatMessage", "Completion", "SubLlm"]


class ChatMessage(TypedDict):
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None = None
    """As reported by the model's side; None when it did not say (then we count)."""
    completion_tokens: int | None = None
    model: str | None = None


class SubLlm(Protocol):
    """A model reachable for sub-queries (and, for rlm_solve, as the root)."""

    name: str

    async def complete(self, messages: list[ChatMessage], *, system: str | None, max_tokens: int) -> Completion:
        """One chat completion; raises SubQueryFailed on failure."""
        ...

    async def aclose(self) -> None: ...
