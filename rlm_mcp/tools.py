"""The MCP tools: thin wrappers that check input, call one session method and shape nothing else.

Docstrings here are what the model reads in tools/list, so they say what the tool
does, when to use it, its limits, and give an example.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from sandbox import SandboxError

from . import mrtr
from .errors import RlmError
from .handles import SessionArg
from .registry import SessionRegistry
from .session import RlmSession
from .shaping import clean_json, json_text
from .trace.calls import bind_session

__all__ = ["register_tools"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_ERROR_CHARS = 4000

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
LOCAL = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


# A tool's result: the JSON object as structured content, and as compact text for the model.
ToolResult = Annotated[CallToolResult, dict[str, Any]]


class SubQueryAnswer(BaseModel):
    """One answer, for clients whose forms cannot fill an object with free keys."""

    model_config = ConfigDict(extra="forbid")

    id: str
    answer: str


# Inline, not a $ref: the clients that need this form are the ones least likely to follow refs.
_ANSWER_LIST_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "The id of a pending sub-query, e.g. 'q1.0'."},
            "answer": {"type": "string", "description": "Your answer to that sub-query's prompt."},
        },
        "required": ["id", "answer"],
        "additionalProperties": False,
    },
}


def _result(value: dict[str, Any], limit: int) -> CallToolResult:
    """The result as the client gets it. Each tool shapes its result to fit the output cap as
    compact JSON; a result that still does not (hundreds of contexts or variables) has its text cut."""
    text = json_text(value)
    if len(text) > limit:
        logger.debug("a result of %d characters was cut to the output cap of %d", len(text), limit)
        note = " [... cut at --max-output-chars: {:,} more characters of JSON]"
        keep = max(limit - len(note) - 12, 0)
        text = text[:keep] + note.format(len(text) - keep)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=value)


async def _run(call: Awaitable[T], limit: int, session: RlmSession | None = None) -> CallToolResult | T:
    """Turn the package's deliberate errors into tool errors; crashes go to the SDK, which hides them.
    A result object gets the session's handle as `session`, first (a cut text still shows it).

    Lone surrogates (from a client's text, or built by sandboxed code) cannot be encoded as JSON:
    results and messages that echo them get U+FFFD instead.
    """
    # A session this very call started (no `session` passed, protocol 2026-07-28 over HTTP): if it
    # fails, the likeliest cause is a forgotten handle, so the error says so.
    fresh = session is not None and session.fresh
    if session is not None:
        session.fresh = False
    try:
        value = clean_json(await call)
    except (RlmError, SandboxError) as exc:
        message = clean_json(str(exc))
        if len(message) > _MAX_ERROR_CHARS:  # it echoes a huge argument back
            message = message[:_MAX_ERROR_CHARS] + f" [... {len(message) - _MAX_ERROR_CHARS:,} more characters]"
        raise ToolError(message + (_FRESH_HINT if fresh else "")) from exc
    if not isinstance(value, dict):
        return value
    if fresh and value.get("status") == "error" and isinstance(value.get("error"), str):
        value["error"] += _FRESH_HINT
    return _result({"session": session.handle, **value} if session is not None else value, limit)


_FRESH_HINT = (" (This call passed no `session`, so it ran in a new, empty session. If you loaded contexts or "
               "set variables before, pass the `session` value from those results.)")


def register_tools(mcp: MCPServer, registry: SessionRegistry) -> None:
    limit = registry.settings.max_output_chars

    def tool(annotations: ToolAnnotations) -> Callable[[Callable[..., Any]], Any]:
        """``mcp.tool`` with the docstring dedented: the description is the model's to read, and the
        docstring's indentation would be hundreds of characters of spaces."""
        def register(fn: Callable[..., Any]) -> Any:
            return mcp.tool(annotations=annotations, description=inspect.cleandoc(fn.__doc__ or ""))(fn)

        return register

    async def session_for(ctx: Context, handle: str | None, sub_queries: bool = False) -> RlmSession:
        """The caller's session (``handle`` is its `session` argument); with ``sub_queries``, also
        the backend and progress sink for the sub-queries this call may make (what works depends on
        this request's client and protocol)."""
        try:
            session = await registry.for_context(ctx, handle)
        except RlmError as exc:
            raise ToolError(str(exc)) from exc
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

    @tool(LOCAL)
    async def load_context(
        ctx: Context,
        name: Annotated[str, Field(description="Name to store it under; 'context' is the variable `context`.")]
        = "context",
        text: Annotated[str | None, Field(description="The content itself.")] = None,
        path: Annotated[str | None, Field(description="A file or folder inside the allowed roots.")] = None,
        url: Annotated[str | None, Field(description="An http(s) URL (needs --allow-url).")] = None,
        glob: Annotated[str | None, Field(description="A glob pattern, e.g. 'src/**/*.py'.")] = None,
        append: Annotated[bool, Field(description="Add to the existing context of that name.")] = False,
        session: SessionArg = None,
    ) -> ToolResult:
        """Load a large input into the session as a named context, WITHOUT putting it in your prompt.

        Give exactly one source:
        - text: the content itself;
        - path: a file, or a folder (every text file under it, recursively, each preceded by a
          line '==> relative/path <==', binary files skipped and listed). PDF (each page after a
          '--- page N ---' line), Word .docx, HTML (visible text), notebooks, .gz/.bz2/.xz and
          .zip/.tar bundles (each member under '==> bundle.zip/member <==') are read as text;
        - glob: e.g. 'src/**/*.py' (same headers);
        - url: an http(s) page or file (only if the server was started with --allow-url).
        Paths must lie inside the server's allowed roots (--root, default: its working directory).
        append=true adds to an existing context instead of replacing it; a load under a name
        already in use replaces that context (the result says `replaced: true`).

        In exec_python the default context is the variable `context`; every context is in
        `contexts[name]`. Returns a summary: chars, lines, tokens (an estimate, token_count
        'counting', while the exact count runs in the background; list_contexts shows it when
        done), number of files, a short head/tail preview, `skipped` ({path, reason} of
        each file left out: binary, broken, encrypted) and `converters` ({path: converter} of
        each file that was not plain text). Next: peek/search it, or
        explore it with exec_python.

        Example: load_context(path="docs/", name="docs")
        """
        rlm = await session_for(ctx, session)
        if path is not None or glob is not None:
            await registry.refresh_client_roots(ctx, rlm)
        return await _run(
            rlm.load_context(name, text=text, path=path, url=url, glob=glob, append=append,
                             progress=progress_for(ctx)), limit, rlm
        )

    @tool(READ_ONLY)
    async def list_contexts(ctx: Context, session: SessionArg = None) -> ToolResult:
        """List the loaded contexts with their sizes (chars, tokens, files)."""
        rlm = await session_for(ctx, session)
        return _result({"session": rlm.handle, **rlm.list_contexts()}, limit)

    @tool(READ_ONLY)
    async def peek(
        ctx: Context,
        name: Annotated[str, Field(description="The context to read.")] = "context",
        start: Annotated[int, Field(description="First char (or line) to read; negative counts from the end.")] = 0,
        end: Annotated[int | None, Field(description="Where to stop (exclusive); null reads as far as the cap "
                                                     "allows.")] = None,
        unit: Annotated[Literal["chars", "lines"], Field(description="What start and end count.")] = "chars",
        session: SessionArg = None,
    ) -> ToolResult:
        """Read a slice of a context: characters start..end, or with unit="lines" 0-based lines start..end.

        end is exclusive; None reads as far as the output cap allows; negative numbers count
        from the end (start=-2000 reads the last 2000 chars). Output is capped (about 20k chars):
        when `truncated` is true, continue from the returned `end`. Use this to look at the
        data's shape before writing code: the start, the end, a few spots in the middle.

        Example: peek(start=0, end=40, unit="lines")
        """
        rlm = await session_for(ctx, session)
        return await _run(rlm.peek(name, start, end, unit), limit, rlm)

    @tool(READ_ONLY)
    async def search(
        ctx: Context,
        pattern: Annotated[str, Field(description="A Python regex (MULTILINE), or literal text with regex=false.")],
        name: Annotated[str, Field(description="The context to search.")] = "context",
        regex: Annotated[bool, Field(description="false: pattern is literal text.")] = True,
        ignore_case: Annotated[bool, Field(description="Match regardless of case.")] = False,
        max_results: Annotated[int, Field(description="Most hits to return.")] = 20,
        window: Annotated[int, Field(description="Chars of text shown on each side of a hit.")] = 200,
        start: Annotated[int, Field(description="Char offset to search from (an earlier result's next_start).")]
        = 0,
        session: SessionArg = None,
    ) -> ToolResult:
        """Find a pattern in a context: each hit with its char offset, its line (counted from 0,
        as peek(unit="lines") counts) and `window` chars of surrounding text. pattern is a Python
        regex (MULTILINE) unless regex=false.

        Stops after max_results hits or at the output cap (truncated=true means there are more:
        call again with start=next_start to continue), so it is cheap on huge contexts. For
        counting or aggregating all hits, use exec_python with `re` instead.

        Example: search(pattern=r"ERROR \\d+", max_results=50, window=80)
        """
        rlm = await session_for(ctx, session)
        return await _run(rlm.search(pattern, name, regex, ignore_case, max_results, window, start), limit, rlm)

    @tool(LOCAL)
    async def exec_python(
        ctx: Context,
        code: Annotated[str, Field(description="Python to run in the session's sandbox REPL.")],
        session: SessionArg = None,
    ) -> ToolResult | InputRequiredResult:
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

        Example: exec_python(code="chunks = [context[i:i+50000] for i in range(0, len(context), 50000)]")
        """
        rlm = await session_for(ctx, session, sub_queries=True)
        if rlm.selection.mode == "mrtr":
            return await _run(mrtr.exec_round(rlm, ctx, code), limit, rlm)
        return await _run(rlm.exec_python(code), limit, rlm)

    @tool(LOCAL)
    async def answer_sub_queries(
        ctx: Context,
        answers: Annotated[
            dict[str, str] | Annotated[list[SubQueryAnswer], WithJsonSchema(_ANSWER_LIST_SCHEMA)],
            Field(description="Your answers, as an object {id: answer}, or as a list of {id, answer} objects."),
        ],
        session: SessionArg = None,
    ) -> ToolResult:
        """Host mode: give your answers to the sub-queries a paused exec_python is waiting for.

        When exec_python returns status "paused", its `pending` list holds {id, prompt} for each
        llm_query the code made (a whole llm_query_batched comes as one round). Answer each prompt
        yourself, from the prompt's text only, briefly and exactly, and pass {id: answer} (or a
        list of {"id": ..., "answer": ...} objects, the same thing for form-based clients). You may
        answer some now and the rest later; once all are in, the code continues where it stopped
        and this returns what exec_python would (possibly "paused" again with the next prompts).

        Example: answer_sub_queries(answers={"q1.0": "3 errors", "q1.1": "none"})
        or: answer_sub_queries(answers=[{"id": "q1.0", "answer": "3 errors"}, {"id": "q1.1", "answer": "none"}])
        """
        rlm = await session_for(ctx, session, sub_queries=True)
        if isinstance(answers, list):
            return await _run(rlm.resume([item.model_dump() for item in answers]), limit, rlm)
        return await _run(rlm.resume(answers), limit, rlm)

    @tool(LOCAL)
    async def sub_query(
        ctx: Context,
        prompt: Annotated[str, Field(description="The question for the sub-LLM.")],
        name: Annotated[str | None, Field(description="A context whose slice is appended to the prompt.")] = None,
        start: Annotated[int | None, Field(description="First char of the slice (needs name).")] = None,
        end: Annotated[int | None, Field(description="End of the slice, exclusive (needs name).")] = None,
        session: SessionArg = None,
    ) -> ToolResult | InputRequiredResult:
        """Ask the sub-LLM one question yourself, optionally about a slice of a context: the slice
        context[start:end] of context `name` is appended to the prompt, so it never passes through
        your own window. Spends the session's sub-query budget.

        Example: sub_query(prompt="List the people named in this section.", name="context", start=120000,
        end=160000)
        """
        rlm = await session_for(ctx, session, sub_queries=True)
        if rlm.selection.mode == "mrtr":
            return await _run(mrtr.sub_query_round(rlm, ctx, prompt, name, start, end), limit, rlm)
        return await _run(rlm.sub_query(prompt, name, start, end), limit, rlm)

    @tool(LOCAL)
    async def rlm_solve(
        ctx: Context,
        question: Annotated[str, Field(description="The question to answer from the context.")],
        name: Annotated[str, Field(description="The loaded context to work on.")] = "context",
        session: SessionArg = None,
    ) -> ToolResult:
        """Let the server run the whole RLM loop on a loaded context and return the final answer.

        The root model is reached through MCP sampling (your client's model, protocol 2025-11-25)
        or the configured provider or command-line model; it writes code, the sandbox runs it,
        sub-queries go to the sub-LLM, until FINAL or the iteration limit (--max-iterations).
        Returns the final answer and a short trace. Progress is reported per iteration. In host
        mode (no sampling, provider or command) this is not available: drive the loop yourself
        with exec_python.

        Example: rlm_solve(question="How many distinct error codes appear?", name="logs")
        """
        rlm = await session_for(ctx, session, sub_queries=True)
        return await _run(rlm.solve(question, name, progress_for(ctx)), limit, rlm)

    @tool(READ_ONLY)
    async def get_variable(
        ctx: Context,
        name: Annotated[str, Field(description="A sandbox variable, 'FINAL' (the last final answer) or "
                                               "'pending:<id>' (a pending prompt).")],
        start: Annotated[int, Field(description="First char of str(variable) to read.")] = 0,
        end: Annotated[int | None, Field(description="Where to stop (exclusive); null reads as far as the cap "
                                                     "allows.")] = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """Read a slice of str(variable) from the sandbox: for long results and final answers that
        exec_python had to cut. name="FINAL" reads the last final answer. Output is capped; when
        `truncated` is true, call again with start=<returned end>.

        Example: get_variable(name="answer", start=20000)
        """
        rlm = await session_for(ctx, session)
        return await _run(rlm.get_variable(name, start, end), limit, rlm)

    @tool(READ_ONLY)
    async def rlm_status(ctx: Context, session: SessionArg = None) -> ToolResult:
        """Show this session's state: sub-LLM backend in use (and why), budgets spent and left,
        contexts, variables, the sandbox worker, pending sub-queries and limits; with a provider
        (--llm-base-url), whether it can be reached."""
        rlm = await session_for(ctx, session, sub_queries=True)
        await rlm.router.probe_provider()
        return _result(clean_json(registry.status(rlm, ctx)), limit)

    @tool(ToolAnnotations(destructive_hint=True, open_world_hint=False))
    async def reset_session(
        ctx: Context,
        keep_contexts: Annotated[bool, Field(description="false also drops every loaded context.")] = True,
        session: SessionArg = None,
    ) -> ToolResult:
        """Start a fresh REPL: all variables (and any paused execution) are dropped. Contexts stay
        loaded unless keep_contexts=false."""
        rlm = await session_for(ctx, session)
        return await _run(rlm.reset(keep_contexts), limit, rlm)
