"""The MCP tools: thin wrappers that check input, call one session method and shape nothing else.

Docstrings here are what the model reads in tools/list, so they say what the tool
does, when to use it, its limits, and give an example.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from sandbox import SandboxError

from . import mrtr
from .errors import RlmError
from .registry import SessionRegistry
from .session import RlmSession
from .shaping import clean_json
from .trace.calls import bind_session

__all__ = ["register_tools"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_ERROR_CHARS = 4000

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
LOCAL = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


async def _run(call: Awaitable[T]) -> T:
    """Turn the package's deliberate errors into tool errors; crashes go to the SDK, which hides them.

    Lone surrogates (from a client's text, or built by sandboxed code) cannot be encoded as JSON:
    results and messages that echo them get U+FFFD instead.
    """
    try:
        return clean_json(await call)
    except (RlmError, SandboxError) as exc:
        message = clean_json(str(exc))
        if len(message) > _MAX_ERROR_CHARS:  # it echoes a huge argument back
            message = message[:_MAX_ERROR_CHARS] + f" [... {len(message) - _MAX_ERROR_CHARS:,} more characters]"
        raise ToolError(message) from exc


def register_tools(mcp: MCPServer, registry: SessionRegistry) -> None:
    async def session_for(ctx: Context, sub_queries: bool = False) -> RlmSession:
        """The caller's session; with ``sub_queries``, also the backend and progress sink for the
        sub-queries this call may make (what works depends on this request's client and protocol)."""
        session = await registry.for_context(ctx)
        bind_session(session)  # the trace's record of this call goes to this session
        if sub_queries:
            session.use(session.router.select(ctx), progress_for(ctx))
        return session

    def progress_for(ctx: Context) -> Callable[[float, float | None, str], Awaitable[None]]:
        async def progress(done: float, total: float | None, message: str) -> None:
            try:
                await ctx.report_progress(done, total, message)
            except Exception:  # noqa: BLE001 - progress is best effort
                logger.debug("progress notification failed", exc_info=True)

        return progress

    @mcp.tool(annotations=LOCAL)
    async def load_context(
        ctx: Context,
        name: str = "context",
        text: str | None = None,
        path: str | None = None,
        url: str | None = None,
        glob: str | None = None,
        append: bool = False,
    ) -> dict[str, Any]:
        """Load a large input into the session as a named context, WITHOUT putting it in your prompt.

        Give exactly one source:
        - text: the content itself;
        - path: a file, or a folder (every text file under it, recursively, each preceded by a
          line '==> relative/path <==', binary files skipped and listed);
        - glob: e.g. 'src/**/*.py' (same headers);
        - url: an http(s) page or file (only if the server was started with --allow-url).
        Paths must lie inside the server's allowed roots (--root, default: its working directory).
        append=true adds to an existing context instead of replacing it; a load under a name
        already in use replaces that context (the result says `replaced: true`).

        In exec_python the default context is the variable `context`; every context is in
        `contexts[name]`. Returns a summary: chars, lines, tokens (token_encoding says how they
        were counted), number of files, a short head/tail preview. Next: peek/search it, or
        explore it with exec_python.

        Example: load_context(path="docs/", name="docs")
        """
        session = await session_for(ctx)
        if path is not None or glob is not None:
            await registry.refresh_client_roots(ctx, session)
        return await _run(
            session.load_context(name, text=text, path=path, url=url, glob=glob, append=append,
                                 progress=progress_for(ctx))
        )

    @mcp.tool(annotations=READ_ONLY)
    async def list_contexts(ctx: Context) -> dict[str, Any]:
        """List the loaded contexts with their sizes (chars, tokens, files)."""
        session = await session_for(ctx)
        return session.list_contexts()

    @mcp.tool(annotations=READ_ONLY)
    async def peek(
        ctx: Context, name: str = "context", start: int = 0, end: int | None = None, unit: str = "chars"
    ) -> dict[str, Any]:
        """Read a slice of a context: characters start..end, or with unit="lines" 0-based lines start..end.

        end is exclusive; None reads as far as the output cap allows; negative numbers count
        from the end (start=-2000 reads the last 2000 chars). Output is capped (about 20k chars):
        when `truncated` is true, continue from the returned `end`. Use this to look at the
        data's shape before writing code: the start, the end, a few spots in the middle.

        Example: peek(start=0, end=40, unit="lines")
        """
        session = await session_for(ctx)
        return await _run(session.peek(name, start, end, unit))

    @mcp.tool(annotations=READ_ONLY)
    async def search(
        ctx: Context,
        pattern: str,
        name: str = "context",
        regex: bool = True,
        ignore_case: bool = False,
        max_results: int = 20,
        window: int = 200,
        start: int = 0,
    ) -> dict[str, Any]:
        """Find a pattern in a context: each hit with its char offset, its line (counted from 0,
        as peek(unit="lines") counts) and `window` chars of surrounding text. pattern is a Python
        regex (MULTILINE) unless regex=false.

        Stops after max_results hits or at the output cap (truncated=true means there are more:
        call again with start=next_start to continue), so it is cheap on huge contexts. For
        counting or aggregating all hits, use exec_python with `re` instead.

        Example: search(pattern=r"ERROR \\d+", max_results=50, window=80)
        """
        session = await session_for(ctx)
        return await _run(session.search(pattern, name, regex, ignore_case, max_results, window, start))

    @mcp.tool(annotations=LOCAL)
    async def exec_python(ctx: Context, code: str) -> dict[str, Any]:
        """Run Python in this session's persistent sandbox REPL (variables survive between calls).

        Available: `context` (the default context, a str), `contexts` (dict of all),
        `llm_query(prompt) -> str` (one sub-LLM call), `llm_query_batched(prompts) -> list[str]`
        (many, concurrently, answers in order; a failed item is 'Error: ...'), `rlm_query(prompt,
        context)` (recursive RLM, when --max-depth allows), `FINAL(answer)` / `FINAL_VAR("name")`
        to give the final answer, `SHOW_VARS()`, `print`, and imports of re, json, math,
        statistics, collections, itertools, functools, heapq, bisect, string, textwrap, difflib,
        datetime, random, hashlib, base64, unicodedata, fractions, decimal, copy, csv, io, pprint.

        Refused by the sandbox (RestrictedPython): names/attributes starting with '_', `d[k] += 1`
        on items or attributes (write d[k] = d[k] + 1), async/await, match statements, str.format
        (use f-strings), open/eval/exec, other modules. Each run has a time limit.

        Strategy: peek first; filter with regex; split into chunks and call llm_query_batched on
        them; keep partial results in variables; verify; build long answers in a variable and
        finish with FINAL_VAR("answer").

        Returns {status: ok|error|paused, stdout, error (with line number and a hint), final,
        variables (changed ones, short reprs), pending}. status "paused" (host mode: the client
        answers sub-queries itself) lists pending prompts with ids: answer them with
        answer_sub_queries and the code continues where it stopped.

        On protocol 2026-07-28 each sequential llm_query is one input-required round of this call,
        and clients allow 10 per call: after 10 the execution stops with an error. Batch instead:
        llm_query_batched(prompts) is one round for the whole list.

        Example: exec_python(code="chunks = [context[i:i+50000] for i in range(0, len(context), 50000)]\\n"
                                   "print(len(chunks))")
        """
        session = await session_for(ctx, sub_queries=True)
        if session.selection.mode == "mrtr":
            return await _run(mrtr.exec_round(session, ctx, code))
        return await _run(session.exec_python(code))

    @mcp.tool(annotations=LOCAL)
    async def answer_sub_queries(ctx: Context, answers: dict[str, str]) -> dict[str, Any]:
        """Host mode: give your answers to the sub-queries a paused exec_python is waiting for.

        When exec_python returns status "paused", its `pending` list holds {id, prompt} for each
        llm_query the code made (a whole llm_query_batched comes as one round). Answer each prompt
        yourself, from the prompt's text only, briefly and exactly, and pass {id: answer}. You may
        answer some now and the rest later; once all are in, the code continues where it stopped
        and this returns what exec_python would (possibly "paused" again with the next prompts).

        Example: answer_sub_queries(answers={"q1.0": "3 errors", "q1.1": "none"})
        """
        session = await session_for(ctx, sub_queries=True)
        return await _run(session.resume(answers))

    @mcp.tool(annotations=LOCAL)
    async def sub_query(
        ctx: Context, prompt: str, name: str | None = None, start: int | None = None, end: int | None = None
    ) -> dict[str, Any]:
        """Ask the sub-LLM one question yourself, optionally about a slice of a context: the slice
        context[start:end] of context `name` is appended to the prompt, so it never passes through
        your own window. Spends the session's sub-query budget.

        Example: sub_query(prompt="List the people named in this section.", name="context",
                           start=120000, end=160000)
        """
        session = await session_for(ctx, sub_queries=True)
        if session.selection.mode == "mrtr":
            return await _run(mrtr.sub_query_round(session, ctx, prompt, name, start, end))
        return await _run(session.sub_query(prompt, name, start, end))

    @mcp.tool(annotations=LOCAL)
    async def rlm_solve(ctx: Context, question: str, name: str = "context") -> dict[str, Any]:
        """Let the server run the whole RLM loop on a loaded context and return the final answer.

        The root model is reached through MCP sampling (your client's model, protocol 2025-11-25)
        or the configured provider; it writes code, the sandbox runs it, sub-queries go to the
        sub-LLM, until FINAL or the iteration limit (--max-iterations). Returns the final answer
        and a short trace. Progress is reported per iteration. In host mode (no sampling, no
        provider) this is not available: drive the loop yourself with exec_python.

        Example: rlm_solve(question="How many distinct error codes appear?", name="logs")
        """
        session = await session_for(ctx, sub_queries=True)
        return await _run(session.solve(question, name, progress_for(ctx)))

    @mcp.tool(annotations=READ_ONLY)
    async def get_variable(ctx: Context, name: str, start: int = 0, end: int | None = None) -> dict[str, Any]:
        """Read a slice of str(variable) from the sandbox: for long results and final answers that
        exec_python had to cut. name="FINAL" reads the last final answer. Output is capped; when
        `truncated` is true, call again with start=<returned end>.

        Example: get_variable(name="answer", start=20000)
        """
        session = await session_for(ctx)
        return await _run(session.get_variable(name, start, end))

    @mcp.tool(annotations=READ_ONLY)
    async def rlm_status(ctx: Context) -> dict[str, Any]:
        """Show this session's state: sub-LLM backend in use (and why), budgets spent and left,
        contexts, variables, the sandbox worker, pending sub-queries and limits."""
        session = await session_for(ctx, sub_queries=True)
        return clean_json(registry.status(session, ctx))

    @mcp.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=False))
    async def reset_session(ctx: Context, keep_contexts: bool = True) -> dict[str, Any]:
        """Start a fresh REPL: all variables (and any paused execution) are dropped. Contexts stay
        loaded unless keep_contexts=false."""
        session = await session_for(ctx)
        return await _run(session.reset(keep_contexts))
