"""Sub-queries answered by the client's own model through MCP sampling (protocol 2025-11-25).

The request rides the tool call's own stream (``related_request_id``), which is
what streamable HTTP needs; on stdio it is the same pipe either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from mcp import types
from mcp.shared.exceptions import MCPError

from ..errors import BackendUnavailable, SubQueryFailed
from .base import ChatMessage, Completion

__all__ = ["SamplingBackend", "client_can_sample", "model_preferences", "sampling_request"]


def client_can_sample(ctx: Any) -> bool:
    capabilities = ctx.client_capabilities
    return capabilities is not None and capabilities.sampling is not None


def model_preferences(hints: Sequence[str]) -> types.ModelPreferences | None:
    """No ``modelPreferences`` unless --model-hint names models: some clients hand the field on to
    their provider's API, which refuses it (fast-agent: "unexpected keyword argument
    'model_preferences'"), and the client's own model choice is the better default."""
    if not hints:
        return None
    return types.ModelPreferences(hints=[types.ModelHint(name=name) for name in hints])


def sampling_request(messages: list[ChatMessage], system: str | None, max_tokens: int,
                     hints: Sequence[str] = ()) -> types.CreateMessageRequest:
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(
            messages=[
                types.SamplingMessage(role=m["role"], content=types.TextContent(type="text", text=m["content"]))
                for m in messages
            ],
            system_prompt=system,
            max_tokens=max_tokens,
            model_preferences=model_preferences(hints),
        )
    )


def completion_from_result(result: Any) -> Completion:
    """Text of a CreateMessageResult (single block or list); non-text blocks are refused."""
    content = getattr(result, "content", None)
    blocks = content if isinstance(content, list) else [content]
    texts = [b.text for b in blocks if getattr(b, "type", None) == "text"]
    if not texts:
        raise SubQueryFailed("the client's model answered without text")
    return Completion(text="".join(texts), model=getattr(result, "model", None))


class SamplingBackend:
    name = "sampling"

    def __init__(self, ctx: Any, hints: Sequence[str] = ()) -> None:
        self._session = ctx.session
        self._related = ctx.request_context.request_id
        self._hints = tuple(hints)

    async def complete(self, messages: list[ChatMessage], *, system: str | None, max_tokens: int) -> Completion:
        request = sampling_request(messages, system, max_tokens, self._hints)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sampling is deprecated only in 2026-07-28
                result = await self._session.send_request(
                    request, types.CreateMessageResult, metadata=_metadata(self._related)
                )
        except MCPError as exc:
            raise SubQueryFailed(f"the client refused or failed the sampling request: {exc}") from exc
        except RuntimeError as exc:  # NoBackChannelError and closed streams
            raise BackendUnavailable(f"sampling is not possible on this connection: {exc}") from exc
        return completion_from_result(result)

    async def aclose(self) -> None:
        return None


def _metadata(related: Any) -> Any:
    from mcp.shared.message import ServerMessageMetadata

    return ServerMessageMetadata(related_request_id=related)
