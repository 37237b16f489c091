"""Each loaded context as a concrete resource in ``resources/list``.

The ``context://{name}`` template lets a client read any context by name, but hosts that browse
resources (the Inspector, clients that attach resources to a chat) show only the list, which was
always empty: the contexts are per session, so the static resource manager cannot hold them. This
middleware adds the caller's contexts to the SDK's answer.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import ListResourcesResult, Resource

from .errors import RlmError

__all__ = ["ContextResources"]


class ContextResources:
    """Server middleware: ``resources/list`` also lists the caller's contexts."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "resources/list" or (ctx.params or {}).get("cursor"):
            return result  # the SDK's list has one page; a later page (if it ever has) gets no repeat
        # Without a `session` argument: on protocol 2026-07-28 over HTTP no session is implied.
        try:
            session = await self.registry.implied_session(ctx)
        except RlmError:  # the server is full: the list stays as the SDK made it
            return result
        if session is None:
            return result
        listed = [
            Resource(
                uri=f"context://{c.name}",
                name=c.name,
                title=f"context {c.name}",
                description=f"Loaded context: {c.chars:,} characters"
                            + (f" from {len(c.files):,} files" if c.files else "")
                            + ". Reading it gives its size and a preview; peek, search and exec_python read the text.",
                mime_type="application/json",
            )
            for c in session.contexts
        ]
        if isinstance(result, ListResourcesResult):
            return result.model_copy(update={"resources": [*result.resources, *listed]})
        if isinstance(result, dict) and isinstance(result.get("resources"), list):  # already serialised
            wire = [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in listed]
            return {**result, "resources": [*result["resources"], *wire]}
        return result
