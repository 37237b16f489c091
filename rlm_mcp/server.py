"""Build the MCP server: tools, the ``rlm`` prompt and one resource per context."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from contextvars import ContextVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, Completion, ResourceTemplateReference

from . import __version__
from .arguments import RlmServer
from .config import Settings
from .context_resources import ContextResources
from .errors import RlmError, UnknownContext
from .logs import quiet_routine_logs
from .prompts import ROOT_PROMPT, root_prompt
from .registry import SessionRegistry
from .session import RlmSession
from .tools import register_tools
from .trace.app import build_trace_app

__all__ = ["build_server"]

# The request being served, for handlers the SDK calls without a context (completions).
_current_request: ContextVar[ServerRequestContext[Any, Any] | None] = ContextVar("rlm_request", default=None)


class _RequestMiddleware:
    """Keeps the current request reachable from completion handlers, and answers an unknown
    prompt with INVALID_PARAMS as the spec asks (the SDK's get_prompt raises a bare ValueError,
    which reaches the client as error code 0)."""

    def __init__(self) -> None:
        self.prompt_names: set[str] = set()

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "prompts/get":
            name = (ctx.params or {}).get("name")
            if name not in self.prompt_names:
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {name!r}; prompts: "
                               f"{', '.join(sorted(self.prompt_names))}")
        token = _current_request.set(ctx)
        try:
            return await call_next(ctx)
        finally:
            _current_request.reset(token)


def build_server(settings: Settings | None = None) -> MCPServer:
    settings = settings or Settings()
    quiet_routine_logs()
    registry = SessionRegistry(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        async with registry.running():
            yield {"registry": registry}

    middleware = _RequestMiddleware()
    mcp = RlmServer(
        "rlm-mcp",
        version=__version__,
        instructions=ROOT_PROMPT,
        lifespan=lifespan,
        log_level=settings.log_level.upper(),  # type: ignore[arg-type]
        middleware=[middleware, registry.middleware, ContextResources(registry)],
        # show_trace and its ui:// view; it also records every tool call into the session's trace.
        extensions=[build_trace_app(registry)],
    )
    mcp.rlm_registry = registry  # type: ignore[attr-defined]  # for tests and benchmarks
    register_tools(mcp, registry)

    @mcp.prompt(name="rlm", description="Instructions for acting as the root model of a Recursive Language Model.")
    def rlm(question: str = "") -> str:
        return root_prompt(question or None)

    middleware.prompt_names.add("rlm")

    @mcp.resource("context://{name}", name="context", description="A loaded context: size and a preview.",
                  mime_type="application/json")
    async def context_resource(name: str, ctx: Context) -> str:
        try:
            session = await registry.implied_session(ctx)
        except RlmError as exc:  # the server is full
            raise ResourceError(str(exc)) from exc
        if session is None:
            raise ResourceError(f"On protocol 2026-07-28 over HTTP a resource read names its session: read "
                                f"context://<session>/{name}, <session> being the `session` field of your tool "
                                "results.")
        return _context_json(session, name)

    @mcp.resource("context://{session}/{name}", name="session-context", mime_type="application/json",
                  description="A loaded context of the session whose handle is {session} (the `session` field "
                              "of tool results): size and a preview.")
    async def session_context_resource(session: str, name: str, ctx: Context) -> str:
        try:
            return _context_json(await registry.for_context(ctx, session), name)
        except RlmError as exc:  # a gone handle
            raise ResourceError(str(exc)) from exc

    def _context_json(session: RlmSession, name: str) -> str:
        try:
            c = session.contexts.get(name)
        except UnknownContext as exc:
            raise ResourceError(str(exc)) from exc
        return json.dumps(
            {
                "name": c.name,
                "chars": c.chars,
                "tokens": c.tokens,
                "token_encoding": c.token_encoding,
                "token_count": c.token_count,
                "files": len(c.files),
                "head": c.head[:2000],
                "tail": c.tail[-1000:] if c.chars > 2000 else "",
            }
        )

    @mcp.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion | None:
        """Complete context names for the ``context://{name}`` and ``context://{session}/{name}``
        resource templates (never handles: they are secrets)."""
        request = _current_request.get()
        if request is None or not isinstance(ref, ResourceTemplateReference) or argument.name != "name":
            return None
        handle = (getattr(context, "arguments", None) or {}).get("session") if "{session}" in ref.uri else None
        try:
            session = (await registry.for_context(request, handle) if handle is not None
                       else await registry.implied_session(request))
        except RlmError:  # a gone handle, or a full server
            return None
        if session is None:
            return None
        names = [n for n in session.contexts.names() if n.startswith(argument.value or "")]
        return Completion(values=names[:100], total=len(names), has_more=len(names) > 100)

    return mcp
