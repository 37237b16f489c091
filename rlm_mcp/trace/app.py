"""The trajectory inside the host: an MCP Apps extension (``mcp.server.apps``).

``show_trace`` is bound to ``ui://rlm-mcp/trace.html`` (served as ``text/html;profile=mcp-app``):
a host with MCP Apps renders the caller's live trajectory in that page; any other host gets
the same tool's text, a compact timeline. The extension also records every tool call
(``intercept_tool_call``), so recording lives in one place instead of in each tool.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from mcp.server.apps import Apps, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolRequestParams, CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from ..errors import RlmError
from ..handles import SessionArg
from ..shaping import clean_json
from .calls import record_call
from .view import app_page

__all__ = ["TRACE_APP_URI", "TraceApps", "build_trace_app", "trace_text"]

TRACE_APP_URI = "ui://rlm-mcp/trace.html"


class TraceApps(Apps):
    """MCP Apps plus the tool-call recorder."""

    async def intercept_tool_call(self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any],
                                  call_next: CallNext) -> HandlerResult:
        return await record_call(params.name, params.arguments, lambda: call_next(ctx))


def _line(event: dict[str, Any]) -> str:
    result = event.get("result") if isinstance(event.get("result"), dict) else {}
    parts = [f"#{event.get('call', '·')} {event.get('type')}"]
    if event.get("seconds") is not None:
        parts.append(f"{event['seconds']:.2f}s")
    if event.get("running"):
        parts.append("running")
    elif event.get("error"):
        parts.append("error: " + str(event["error"]).splitlines()[0][:120] if str(event["error"]).strip() else "error")
    elif result.get("status"):
        parts.append(str(result["status"]))
    subs = len(event.get("sub_queries") or []) + (event.get("sub_queries_not_kept") or 0)
    if subs:
        parts.append(f"{subs} sub-queries")
    args = event.get("arguments") or {}
    hint = args.get("code") or args.get("question") or args.get("prompt") or args.get("pattern") or ""
    if isinstance(hint, str) and hint.strip():
        first = hint.strip().splitlines()[0]
        parts.append("— " + (first[:80] + "…" if len(first) > 80 else first))
    return " ".join(parts)


def trace_text(snapshot: dict[str, Any], limit: int) -> str:
    """The live trajectory as text, for hosts without MCP Apps (and for the model)."""
    t = snapshot["totals"]
    lines = [
        f"Session {snapshot['header'].get('session')}: {t['calls']} tool calls, {t['executions']} executions, "
        f"{t['sub_queries']} sub-queries, {t['tokens']:,} sub-query tokens, {t['seconds']:.1f} s in tool calls, "
        f"{t['errors']} errors.",
    ]
    if snapshot.get("events_not_shown"):
        lines.append(f"({snapshot['events_not_shown']} earlier calls not shown.)")
    lines += [_line(e) for e in snapshot["events"]] + [_line(e) for e in snapshot["running"]]
    final = t.get("final")
    lines.append("Final answer: " + (str(final)[:1000] if final is not None else "none yet"))
    text = "\n".join(lines)
    if len(text) > limit:
        text = "…\n" + text[-limit:]
    return text


def build_trace_app(registry: Any) -> TraceApps:
    apps = TraceApps()

    async def show_trace(
        ctx: Context,
        last: Annotated[int, Field(description="How many of the newest calls to include.")] = 200,
        session: SessionArg = None,
    ) -> CallToolResult:
        """Show this session's trajectory: every tool call so far with its duration, the code run
        and its output, the sub-queries each execution made, totals (time, sub-queries, tokens) and
        the final answer. In hosts with MCP Apps it opens as an interactive view; elsewhere it is
        a compact text timeline. last = how many of the newest calls to include (default 200).
        For a whole past session, start the server with --trace-dir and run
        `rlm-mcp trace view FILE`."""
        try:
            rlm = await registry.for_context(ctx, session)
        except RlmError as exc:
            raise ToolError(str(exc)) from exc
        # clean_json: code can build lone surrogates, which the trace keeps and JSON cannot carry.
        snapshot = clean_json(rlm.tracer.snapshot(max(0, min(int(last), 2000))))
        snapshot["session"] = rlm.handle
        text = trace_text(snapshot, registry.settings.max_output_chars)
        if not client_supports_apps(ctx):
            # The timeline is the text; the data stays small: totals, not every event again.
            summary = {"session": rlm.handle, "totals": snapshot["totals"],
                       "calls_shown": len(snapshot["events"]), "running": len(snapshot["running"])}
            return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=summary)
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=snapshot)

    # Dedented: the description is the model's to read.
    apps.tool(resource_uri=TRACE_APP_URI, name="show_trace", description=inspect.cleandoc(show_trace.__doc__ or ""),
              annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))(show_trace)

    apps.add_html_resource(TRACE_APP_URI, app_page(), name="trajectory",
                           title="rlm-mcp trajectory",
                           description="The caller's live RLM trajectory: tool calls, code, sub-queries, totals.",
                           prefers_border=True)
    return apps
