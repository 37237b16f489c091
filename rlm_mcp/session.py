"""One client's RLM state: its contexts, its sandbox worker, its budgets.

Everything a tool does is a method here, testable without MCP: the tool layer
only validates arguments, calls one method and hands back the dict it returns.
Outputs are capped (hosts cut long tool results) and say how to read the rest.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import Any

import anyio

from sandbox import (
    ExecResult,
    FileScan,
    FindResult,
    Isolation,
    Limits,
    NotPaused,
    NotUtf8,
    SandboxBusy,
    SandboxError,
    SandboxSession,
    SessionState,
    SpilledText,
    SpillStore,
    SubQueryFailure,
    SubQueryRequest,
    VariableSlice,
)

from . import __version__
from . import contexts as ctxmod
from .backends.base import SubLlm
from .config import Settings
from .errors import (
    InvalidInput,
    RlmError,
    SessionGone,
    SourceError,
    SubQueryFailed,
    TooLarge,
    UnknownContext,
    UnknownVariable,
)
from .loaders import LoadedSource, LoadLimits, load_glob, load_path, load_text
from .solver import SolveResult, run_rlm_loop
from .subqueries import Selection, SubQueryRouter
from .counting import CountJob
from .tokens import ESTIMATE
from .shaping import cap_text, clean_json, fitting_prefix, json_chars, shape_exec_result
from .trace import Tracer

__all__ = ["RlmSession", "Progress", "answers_by_id"]

logger = logging.getLogger(__name__)

Progress = Callable[[float, "float | None", str], Awaitable[None]]

_PREVIEW = 300
_COUNTING_NOTE = ("tokens is an estimate (chars / 4) for now: the exact count runs in the background; "
                  "list_contexts and rlm_status show it (token_count 'exact') when done.")
_MIB = 1024 * 1024


class RlmSession:
    """Contexts, a lazily started sandbox worker, and the sub-query hook for one client."""

    def __init__(self, settings: Settings, label: str = "session", provider: SubLlm | None = None,
                 depth: int = 0, tracer: Tracer | None = None, handle: str | None = None,
                 worker_slot: Callable[[RlmSession], AbstractAsyncContextManager[None]] | None = None) -> None:
        self.settings = settings
        self.label = label
        # What clients pass as `session` to reach this session (None for child RLMs).
        self.handle = handle
        # A cap on workers across sessions (workers.WorkerCap.slot): held while this one starts.
        self._worker_slot = worker_slot
        self.in_requests = 0
        # Started by the call being served, which passed no handle (registry): its errors say so.
        self.fresh = False
        # Why the last worker was stopped while it held variables: the next result says so.
        self._stopped_note: str | None = None
        self.depth = depth
        self.contexts = ctxmod.ContextStore()
        # The texts themselves: on disk here, in memory only in the worker. Outlives workers
        # (an idle stop, a crash) so that the next one gets every context back.
        self._texts = SpillStore()
        # One load at a time: an append extends the line index of the context as it was before.
        self._load_lock = anyio.Lock()
        # Loads under way (reading included) and the event that ends the wait of code sent
        # meanwhile: exec_python runs on the contexts the client asked for, not on half of them.
        self._loads = 0
        self._loads_done = anyio.Event()
        self._loads_done.set()
        # Exact token counts running in the background, by context name (see counting.py). The
        # lock orders a count's arrival against the load that replaces its context.
        self._counts: dict[str, CountJob] = {}
        self._count_lock = threading.Lock()
        self._generations = itertools.count(1)
        # The trajectory: kept in memory for show_trace, written to --trace-dir when set. A child
        # RLM records into its parent's, under the call that started it.
        self._owns_tracer = tracer is None
        self.tracer = tracer or Tracer(label, settings, settings.trace_dir, __version__)
        self.router = SubQueryRouter(settings, provider=provider, tracer=self.tracer)
        if self._owns_tracer:
            self.tracer.backend_info = self.router.status
        self.selection = Selection("none", "no tool call has chosen a backend yet")
        self.progress: Progress | None = None
        self.extra_roots: list[Path] = []
        self._sandbox: SandboxSession | None = None
        self._start_lock = anyio.Lock()
        self._closed = False
        self.last_used = anyio.current_time()
        self.executions = 0
        self.paused_since: float | None = None
        self.pause_serial = 0
        self.pause_mode: str | None = None

    def use(self, selection: Selection, progress: Progress | None = None) -> None:
        """The backend and progress sink for sub-queries made during the current tool call."""
        self.selection = selection
        self.progress = progress

    # -- worker lifecycle --------------------------------------------------------------------

    def _limits(self) -> Limits:
        s = self.settings
        return Limits(
            exec_timeout=s.exec_timeout,
            memory_mb=s.memory_mb,
            max_output_chars=max(s.max_output_chars * 5, 100_000),
        )

    async def _dispatch_sub_query(self, request: SubQueryRequest) -> Any:
        return await self.router.run(request, self.selection, self.progress, self._rlm_child)

    async def _rlm_child(self, prompt: str, context: str, selection: Selection) -> str:
        """``rlm_query`` from sandboxed code: a child RLM with its own worker while depth allows,
        else a plain sub-query over prompt + context."""
        backend = selection.backend
        assert backend is not None
        if self.depth + 1 >= self.settings.max_depth:
            return await self.router.complete(backend, f"{prompt}\n\n{context}" if context else prompt)
        child = RlmSession(self.settings, f"{self.label}.child", provider=self.router.provider(), depth=self.depth + 1,
                           tracer=self.tracer)
        child.router.budget = self.router.budget  # children spend the parent's budgets
        child.use(selection)
        try:
            await child.load_context("context", text=context)
            sandbox = await child.sandbox()
            result = await run_rlm_loop(prompt, sandbox, backend, context_info=_context_info(child.contexts.get("context")),
                                        max_iterations=self.settings.max_iterations)
        finally:
            with anyio.CancelScope(shield=True):
                await child.aclose()
        if result.final is None:
            raise SubQueryFailed(f"the child RLM gave no final answer within {result.iterations} iterations")
        return result.final

    async def sandbox(self) -> SandboxSession:
        """The running worker, started (and given every context) on first use."""
        if self._closed:
            raise SessionGone("This session has ended; omit `session` to start a new one (its handle comes back "
                              "in the result as `session`).")
        self.last_used = anyio.current_time()
        if self._sandbox is not None:
            return self._sandbox
        async with self._start_lock:
            if self._sandbox is None:
                slot = self._worker_slot(self) if self._worker_slot is not None else nullcontext()
                async with slot:
                    await self._start_worker()
        assert self._sandbox is not None
        return self._sandbox

    async def _start_worker(self) -> None:
        """Start a worker and give it every context (under the start lock and a worker slot)."""
        sandbox = SandboxSession(self._limits(), on_sub_query=self._dispatch_sub_query, store=self._texts,
                                 isolation=Isolation(self.settings.isolation, self.settings.bwrap))
        try:
            # start() inside the try: a call cancelled mid-start must not leave its worker.
            await sandbox.start()  # it loads every context of the store
            for name in sandbox.contexts_lost:
                logger.warning("context %r of %s was removed from disk; it is gone", name, self.label)
                if name in self.contexts:
                    self._cancel_counts(name)
                    self.contexts.drop(name)
            if self._closed:  # aclose() ran meanwhile and could not see this worker
                raise RlmError("This session was closed while its worker was starting.")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await sandbox.aclose()
            raise
        self._sandbox = sandbox
        self.last_used = anyio.current_time()  # starting took time; it was not idle

    @property
    def worker_running(self) -> bool:
        return self._sandbox is not None

    @property
    def paused(self) -> bool:
        return self._sandbox is not None and bool(self._sandbox.pending)

    @property
    def busy(self) -> bool:
        """An execution holds the worker right now (running code, or waiting on its sub-queries)."""
        return self._sandbox is not None and self._sandbox.state is SessionState.RUNNING

    @property
    def loading(self) -> bool:
        return self._loads > 0

    @property
    def in_use(self) -> bool:
        """A request works on this session, or code runs in its worker, or a load is under way."""
        return bool(self.in_requests) or self.busy or self.loading

    @property
    def stoppable(self) -> bool:
        """Its worker can stop without losing work: not in use, and no execution paused in it."""
        return not (self.in_use or self.paused)

    @property
    def holds_nothing(self) -> bool:
        """Never loaded a context nor ran a worker: ending it loses nothing."""
        return not len(self.contexts) and self._sandbox is None and not self.executions

    async def stop_worker(self, reason: str | None = None) -> None:
        """Stop the worker (idle, or to make room); contexts stay and a new worker gets them on
        next use. With ``reason``, the next result says why the variables are gone."""
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            if reason is not None and sandbox.variable_names:
                self._stopped_note = (f"this session's sandbox worker was stopped earlier ({reason}); a new one "
                                      "has every context, but the variables from before are gone")
            with anyio.CancelScope(shield=True):
                await sandbox.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self.stop_worker()
        self._cancel_counts()
        self.contexts.clear()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._texts.close)
        with anyio.CancelScope(shield=True):
            await self.router.aclose()
        if self._owns_tracer:
            self.tracer.close()

    # -- contexts -----------------------------------------------------------------------------

    def _load_limits(self) -> LoadLimits:
        s = self.settings
        return LoadLimits(
            max_bytes=s.max_load_mb * _MIB,
            max_files=s.max_files,
            roots=[*s.allowed_roots, *self.extra_roots],
            allow_url=s.allow_url,
            allow_private_urls=s.allow_private_urls,
        )

    async def load_context(
        self,
        name: str = "context",
        text: str | None = None,
        path: str | None = None,
        url: str | None = None,
        glob: str | None = None,
        append: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        given = {k: v for k, v in (("text", text), ("path", path), ("url", url), ("glob", glob)) if v is not None}
        if len(given) != 1:
            which = ", ".join(given) if given else "none"
            raise InvalidInput(
                f"Pass exactly one source: text, path, url or glob (got {which}). "
                "Example: load_context(path='docs/') or load_context(text='...', name='notes')."
            )
        if self._loads == 0:
            self._loads_done = anyio.Event()
        self._loads += 1
        try:
            return await self._load(name, text, path, url, glob, append, progress)
        finally:
            self._loads -= 1
            if self._loads == 0:
                self._loads_done.set()

    async def _load(self, name: str, text: str | None, path: str | None, url: str | None, glob: str | None,
                    append: bool, progress: Progress | None) -> dict[str, Any]:
        limits = self._load_limits()
        if text is not None:
            if len(text) > limits.max_bytes:
                raise TooLarge(
                    f"The text is {len(text):,} characters; the cap is {limits.max_bytes:,} "
                    "(raise it with --max-load-mb)."
                )
            source: LoadedSource = load_text(text)
        elif path is not None:
            source = await load_path(path, limits, progress, copy_ok=not append)
            if source.file is not None:
                copied = await self._copy_in(source.file, path, limits)
                if copied is not None:
                    return await self._store(name, source, append, progress, copied)
                source = await load_path(path, limits, progress)  # not strict UTF-8: decode it here
        elif glob is not None:
            source = await load_glob(glob, limits, progress)
        else:
            assert url is not None
            from .urls import load_url  # here: httpx costs the server ~2 MB, and most never load a URL

            source = await load_url(url, limits, progress)
        return await self._store(name, source, append, progress)

    async def _copy_in(self, file: Path, shown: str, limits: LoadLimits) -> tuple[SpilledText, FileScan] | None:
        """A plain-text file copied to the session's store by the kernel and checked there; None
        if it is not strict UTF-8 (the caller then decodes it with replacements)."""
        try:
            return await anyio.to_thread.run_sync(self._texts.copy_file, file, limits.max_bytes, ctxmod.EDGE)
        except NotUtf8:
            return None
        except OverflowError:
            raise TooLarge(f"The file {shown!r} grew past the {limits.max_bytes:,}-byte load cap while it was copied; "
                           "load a smaller file, or start the server with --max-load-mb set higher.") from None
        except OSError as exc:
            raise SourceError(f"Could not copy {shown!r} for the sandbox ({exc.strerror or exc}); check the file, "
                              "and the free space of the temporary folder (TMPDIR).") from exc

    async def _store(self, name: str, source: LoadedSource, append: bool, progress: Progress | None,
                     copied: tuple[SpilledText, FileScan] | None = None) -> dict[str, Any]:
        """Index the text, put it on disk, drop it, then give it to the worker (a file ``copied``
        is on disk already, and its line index is built while the worker reads it).

        The order keeps memory near one copy of the text: the worker decodes it (briefly two
        copies there) only once this process has let go of its own."""
        ctxmod.check_name(name)
        try:
            async with self._load_lock:
                return await self._store_locked(name, source, append, progress, copied)
        except BaseException:
            if copied is not None:
                SpillStore.discard(copied[0])  # no-op once committed (the file was renamed)
            raise

    async def _store_locked(self, name: str, source: LoadedSource, append: bool, progress: Progress | None,
                            copied: tuple[SpilledText, FileScan] | None) -> dict[str, Any]:
        previous = self.contexts.get(name) if append and name in self.contexts else None
        replaced = self.contexts.get(name) if not append and name in self.contexts else None
        if previous is not None:
            await previous.ready()
        sandbox = await self.sandbox()
        if copied is not None:
            spilled, scan = copied
            indexed = ctxmod.Context.from_file(name, open(spilled.path, "rb"), spilled.chars,  # noqa: SIM115
                                               scan.lines, scan.head, scan.tail, scan.ends_with_newline, source.files)
        else:
            text, source.text = source.text, ""
            indexed, spilled = await self._prepare(sandbox, name, text, previous, source, progress)
            del text  # from here on the worker holds the only copy in memory
            # Before the worker decodes its copy: what the read, the count and the index freed.
            await anyio.to_thread.run_sync(_give_back_freed_memory)
        if progress is not None:
            await progress(0, None, f"sending {indexed.chars - (previous.chars if previous else 0):,} characters "
                                    "to the sandbox")
        # The store is updated only once the worker has the text, so the two never disagree
        # after a failed load.
        await sandbox.load_context(name, spilled, append=previous is not None)
        ctx = indexed
        self._count_in_background(ctx, previous, spilled.nbytes)
        return {
            "name": name,
            "chars": ctx.chars,
            "lines": ctx.lines,
            "tokens": ctx.tokens,
            "token_encoding": ctx.token_encoding,
            "token_count": ctx.token_count,
            "files": len(ctx.files),
            "paths": ctx.files[:50],
            "skipped": ctx.skipped[:50],
            "converters": dict(list(source.converters.items())[:50]),
            "warnings": ([f"this replaced the context {name!r} loaded before ({replaced.chars:,} characters); "
                          "pass another name to keep both, or append=True to add to it"] if replaced else [])
                        + source.warnings[:20],
            "appended": previous is not None,
            "replaced": replaced is not None,
            "preview": ctx.preview(_PREVIEW),
            **({"token_note": _COUNTING_NOTE} if ctx.token_count == "counting" else {}),
        }

    def _count_in_background(self, ctx: ctxmod.Context, previous: ctxmod.Context | None, added_bytes: int) -> None:
        """Store ``ctx`` with an estimate and start its exact count on the context's file: only the
        appended bytes when the earlier text's count is exact, else the whole file. A count still
        running for the name is cancelled; its result could only be stale."""
        keep = previous is not None and previous.token_count == "exact" and previous.tokens is not None
        base = previous.tokens if keep and previous is not None and previous.tokens is not None else 0
        ctx.generation = generation = next(self._generations)
        ctx.tokens = base + math.ceil((ctx.chars - (previous.chars if keep and previous else 0)) / 4)
        ctx.token_encoding, ctx.token_count = ESTIMATE, "counting"
        spilled = self._texts.get(ctx.name)

        def done(tokens: int | None, encoding: str) -> None:
            with self._count_lock:
                if self._counts.get(ctx.name) is not job:
                    return  # cancelled, or replaced by a later load's count
                del self._counts[ctx.name]
                if ctx.generation != generation or self.contexts.current(ctx.name) is not ctx:
                    return  # the context was replaced or removed: this count is not its count
                if tokens is None or encoding == ESTIMATE:
                    ctx.token_count = "estimate"
                    if tokens is not None:
                        ctx.tokens = base + tokens
                    else:
                        logger.warning("token count of context %r failed (%s); keeping the estimate", ctx.name,
                                       encoding)
                    return
                ctx.tokens, ctx.token_encoding, ctx.token_count = base + tokens, encoding, "exact"

        job = None
        if spilled is not None:
            job = CountJob(spilled.path, spilled.nbytes - added_bytes if keep else 0, spilled.nbytes, done)
        with self._count_lock:
            old = self._counts.pop(ctx.name, None)
            self.contexts.put(ctx)
            if job is not None:
                self._counts[ctx.name] = job
            else:
                ctx.token_count = "estimate"
        if old is not None:
            old.cancel()
        if job is not None:
            job.start()

    def _cancel_counts(self, name: str | None = None) -> None:
        """Stop the background counts of ``name`` (or of every context)."""
        with self._count_lock:
            names = list(self._counts) if name is None else [name]
            jobs = [job for n in names if (job := self._counts.pop(n, None)) is not None]
        for job in jobs:
            job.cancel()

    async def wait_for_counts(self, timeout: float = 300) -> bool:
        """Wait until every background token count has finished (tests, benchmarks); False if
        one is still running after ``timeout`` seconds."""
        with self._count_lock:
            jobs = list(self._counts.values())
        for job in jobs:
            if not await anyio.to_thread.run_sync(job.wait, timeout):
                return False
        return True

    @staticmethod
    async def _prepare(sandbox: SandboxSession, name: str, text: str, previous: ctxmod.Context | None,
                       source: LoadedSource, progress: Progress | None) -> tuple[ctxmod.Context, SpilledText]:
        """Index the lines of ``text`` and write it to disk, concurrently."""
        if progress is not None:
            await progress(0, None, f"indexing {len(text):,} characters")
        done: dict[str, Any] = {}

        async def index() -> None:
            if previous is not None:
                done["ctx"] = await anyio.to_thread.run_sync(previous.appended, text, source.files, source.skipped)
            else:
                done["ctx"] = await anyio.to_thread.run_sync(ctxmod.Context.from_text, name, text, source.files,
                                                             source.skipped)

        async def spill() -> None:
            done["spilled"] = await sandbox.spill(text)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(index)
                tg.start_soon(spill)
        except BaseException:
            if "spilled" in done:
                SpillStore.discard(done["spilled"])
            raise
        return done["ctx"], done["spilled"]

    def list_contexts(self) -> dict[str, Any]:
        return {
            "contexts": [
                {
                    "name": c.name,
                    "chars": c.chars,
                    "tokens": c.tokens,
                    "token_encoding": c.token_encoding,
                    "token_count": c.token_count,
                    "files": len(c.files),
                }
                for c in self.contexts
            ],
            "total_chars": self.contexts.total_chars,
        }

    async def peek(self, name: str = "context", start: int = 0, end: int | None = None,
                   unit: str = "chars") -> dict[str, Any]:
        self.last_used = anyio.current_time()
        if unit not in ("chars", "lines"):
            raise InvalidInput(f"unit must be 'chars' or 'lines', not {unit!r}.")
        ctx = self.contexts.get(name)
        return await ctxmod.peek(ctx, self._source(name), start, end, unit,
                                 max_chars=self.settings.max_output_chars)

    async def search(self, pattern: str, name: str = "context", regex: bool = True, ignore_case: bool = False,
                     max_results: int = 20, window: int = 200, start: int = 0) -> dict[str, Any]:
        self.last_used = anyio.current_time()
        ctx = self.contexts.get(name)
        return await ctxmod.search(ctx, self._source(name), pattern, regex, ignore_case, max_results, window,
                                   max_chars=self.settings.max_output_chars, timeout=self.settings.search_timeout,
                                   start=start)

    def _source(self, name: str) -> _SessionText:
        return _SessionText(self, name)

    # -- code -----------------------------------------------------------------------------------

    async def exec_python(self, code: str) -> dict[str, Any]:
        if not isinstance(code, str) or not code.strip():
            raise InvalidInput("code must be a non-empty string of Python.")
        await self._loads_done.wait()
        sandbox = await self.sandbox()
        try:
            result = await sandbox.execute(code)
        except SandboxBusy as exc:
            raise InvalidInput(
                f"{exc} Pending ids: {', '.join(p.id for p in sandbox.pending)}. "
                "Call answer_sub_queries({id: answer}) or reset_session()."
            ) from exc
        self.executions += 1
        return self._after(result)

    async def resume(self, answers: Mapping[str, Any] | list[Any]) -> dict[str, Any]:
        """Host mode: the root model's answers to pending sub-queries; the paused code goes on.
        ``answers`` is ``{id: answer}`` or a list of ``{"id": ..., "answer": ...}``."""
        if isinstance(answers, list):
            answers = answers_by_id(answers)
        if not isinstance(answers, Mapping) or not answers:
            raise InvalidInput("answers must be a non-empty object {id: answer} (or a list of {id, answer} "
                               "objects) for the pending sub-queries.")
        sandbox = await self.sandbox()
        pending = {p.id: p.text for p in sandbox.pending}
        if not pending:
            raise InvalidInput("No execution is waiting for sub-query answers (nothing is paused).")
        unknown = [key for key in answers if key not in pending]
        if unknown:
            raise InvalidInput(f"Unknown sub-query id(s) {unknown}; pending ids: {sorted(pending)}.")
        cleaned: dict[str, str | SubQueryFailure] = {}
        for key, value in answers.items():
            if isinstance(value, SubQueryFailure):
                cleaned[key] = value
            elif isinstance(value, str):
                if len(value) > self.settings.max_prompt_chars:
                    raise InvalidInput(f"The answer for {key} is {len(value):,} characters; the cap is "
                                       f"{self.settings.max_prompt_chars:,} (--max-prompt-chars).")
                cleaned[key] = value
            else:
                raise InvalidInput(f"The answer for {key} must be a string, not {type(value).__name__}.")
        refusal = self.router.budget.refusal(len(cleaned))
        if refusal is not None:
            cleaned = {k: SubQueryFailure(refusal) for k in cleaned}
        texts = [v for v in cleaned.values() if isinstance(v, str)]
        await self.router.account_host_answers([pending[k] for k, v in cleaned.items() if isinstance(v, str)], texts)
        try:
            result = await sandbox.resume(cleaned)
        except NotPaused as exc:
            raise InvalidInput(str(exc)) from exc
        return self._after(result)

    async def cancel_pause(self, reason: str) -> dict[str, Any] | None:
        """Fail every pending sub-query (abandoned pauses); the code sees SubQueryError."""
        sandbox = self._sandbox
        if sandbox is None or not sandbox.pending:
            return None
        result = await sandbox.cancel_pending(reason)
        shaped = self._after(result)
        self.tracer.event("pause_cancelled", reason=reason,
                          result={k: shaped.get(k) for k in ("status", "stdout", "error", "final")})
        return shaped

    def _after(self, result: ExecResult) -> dict[str, Any]:
        if result.status == "paused":
            if self.paused_since is None:
                self.pause_serial += 1
                self.paused_since = anyio.current_time()
        else:
            self.paused_since = None
        self.last_used = anyio.current_time()
        shaped = self.shape_result(result)
        if self._stopped_note is not None:
            shaped["notes"] = [self._stopped_note, *shaped.get("notes", [])]
            self._stopped_note = None
        return shaped

    # -- sub-queries from the root ------------------------------------------------------------

    async def sub_query_prompt(self, prompt: str, name: str | None, start: int | None, end: int | None) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInput("prompt must be a non-empty string.")
        if name is None:
            if start is not None or end is not None:
                raise InvalidInput("start/end need name= (the context to slice).")
            text = prompt
        else:
            ctx = self.contexts.get(name)
            lo = 0 if start is None else start
            hi = ctx.chars if end is None else end
            if not (0 <= lo <= hi <= ctx.chars):
                raise InvalidInput(f"start/end must satisfy 0 <= start <= end <= {ctx.chars} for context {name!r}.")
            if hi - lo + len(prompt) > self.settings.max_prompt_chars:
                raise InvalidInput(f"The prompt with its slice is over {self.settings.max_prompt_chars:,} characters "
                                   "(--max-prompt-chars). Send a smaller slice.")
            piece = await self._source(name).slice(lo, hi)
            text = f"{prompt}\n\n--- {name}[{lo}:{hi}] ---\n{piece}"
        if len(text) > self.settings.max_prompt_chars:
            raise InvalidInput(f"The prompt with its slice is {len(text):,} characters; the cap is "
                               f"{self.settings.max_prompt_chars:,} (--max-prompt-chars). Send a smaller slice.")
        return text

    async def sub_query(self, prompt: str, name: str | None = None, start: int | None = None,
                        end: int | None = None) -> dict[str, Any]:
        text = await self.sub_query_prompt(prompt, name, start, end)
        backend = self.selection.backend
        if backend is None:
            raise InvalidInput(
                f"sub_query needs a sub-LLM, and this session has none ({self.selection.reason}). In host mode "
                "you are the model: read the slice with peek and answer it yourself."
            )
        answer = await self.router.complete(backend, text)
        shaped, cut = cap_text(answer, max(self.settings.max_output_chars - 300, 200), "The sub-LLM's answer was cut.")
        return {"answer": shaped, "backend": backend.name, "prompt_chars": len(text), "truncated": cut}

    async def solve(self, question: str, name: str = "context", progress: Progress | None = None) -> dict[str, Any]:
        """rlm_solve: the server plays the RLM loop with the selected backend as root."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("question must be a non-empty string.")
        ctx = self.contexts.get(name)
        backend = self.selection.backend
        if backend is None and self.selection.mode == "mrtr":
            raise InvalidInput(
                "rlm_solve is not available on protocol 2026-07-28 with sampling alone: the root loop makes "
                "many model calls, and this protocol carries them only as input-required rounds of one tool "
                "call (clients allow 10). To use it, connect with a client on protocol 2025-11-25 (e.g. the "
                "Python SDK's Client(mode='legacy'), the TypeScript SDK 1.x, VS Code, fast-agent), or start "
                "rlm-mcp with a provider (--llm-base-url URL --llm-model NAME) or a command "
                "(--sub-llm command --llm-command CMD). Or drive the loop yourself with exec_python, which "
                "works here."
            )
        if backend is None:
            raise InvalidInput(
                f"rlm_solve needs a model to play the root: MCP sampling on protocol 2025-11-25, a provider "
                f"(--llm-base-url) or a command (--llm-command). This session has none ({self.selection.reason}). "
                "Drive the loop yourself with exec_python instead."
            )
        sandbox = await self.sandbox()
        info = _context_info(ctx)
        if name != "context":
            info += (f"\n\nIn this REPL that context is `contexts[{name!r}]` (the variable `context` is another "
                     f"input): start with `doc = contexts[{name!r}]` and work on `doc`.")
        result: SolveResult = await run_rlm_loop(
            question, sandbox, backend, context_info=info,
            max_iterations=self.settings.max_iterations, progress=progress, on_step=self.tracer.step,
        )
        shaped = {
            "final": None,
            "iterations": result.iterations,
            "completed": result.final is not None,
            "truncated": False,
            "trace": result.trace,
            "budget": self.router.budget.as_dict(),
        }
        if result.final is not None:
            room = max(self.settings.max_output_chars - json_chars(shaped) - 300, 200)
            shaped["final"], shaped["truncated"] = cap_text(result.final, room,
                                                            "Read the rest with get_variable('FINAL', start=...).")
        return shaped

    def shape_result(self, result: ExecResult) -> dict[str, Any]:
        return shape_exec_result(result, self.settings.max_output_chars)

    def pending_prompts(self) -> list[dict[str, str]]:
        """The full prompts of the paused execution (for input-required rounds)."""
        sandbox = self._sandbox
        return [{"id": p.id, "prompt": p.text} for p in sandbox.pending] if sandbox else []

    async def get_variable(self, name: str, start: int = 0, end: int | None = None) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise InvalidInput("name must be a variable name, or 'FINAL' for the last final answer.")
        if start < 0 or (end is not None and end < start):
            raise InvalidInput("start must be >= 0 and end >= start (end=None reads to the end).")
        limit = self.settings.max_output_chars
        want_end = start + limit if end is None else min(end, start + limit)
        sandbox = await self.sandbox()
        if name.startswith("pending:"):
            prompts = {p.id: p.text for p in sandbox.pending}
            if name[8:] not in prompts:
                raise UnknownVariable(f"No pending sub-query {name[8:]!r}; pending: {sorted(prompts) or 'none'}.")
            text = prompts[name[8:]]
            piece = VariableSlice(name, min(start, len(text)), min(want_end, len(text)), len(text),
                                  text[start:want_end])
        else:
            try:
                piece = await sandbox.get_variable(name, start, want_end)
            except SandboxError as exc:
                raise UnknownVariable(str(exc)) from exc
        if start > piece.total:
            raise InvalidInput(f"start={start} is past the end: {name!r} has {piece.total:,} characters.")
        # The cap counts the text as JSON (a newline takes two characters there), with the keys.
        fits = fitting_prefix(piece.text, max(limit - 600, 1))
        piece = VariableSlice(piece.name, piece.start, piece.start + fits, piece.total, piece.text[:fits])
        truncated = piece.end < (piece.total if end is None else min(end, piece.total))
        result = {"name": name, "start": piece.start, "end": piece.end, "total": piece.total,
                  "text": piece.text, "truncated": truncated}
        if truncated:
            result["note"] = f"capped at {limit:,} characters; continue with get_variable({name!r}, start={piece.end})"
        return clean_json(result)

    async def reset(self, keep_contexts: bool = True) -> dict[str, Any]:
        if not keep_contexts:
            self._cancel_counts()
            self.contexts.clear()
        if self._sandbox is not None:
            if keep_contexts:
                await self._sandbox.reset(keep_contexts=True)
            else:
                await self.stop_worker()
        if not keep_contexts:
            await anyio.to_thread.run_sync(self._texts.clear)
        return {"reset": True, "contexts": self.contexts.names()}

    def status(self) -> dict[str, Any]:
        sandbox = self._sandbox
        return {
            "session": self.handle,
            "label": self.label,
            "sub_llm": self.router.status(),
            **self.router.budget.as_dict(),
            "contexts": self.list_contexts()["contexts"],
            "variables": sandbox.variable_names if sandbox else [],
            "worker": {
                "running": sandbox is not None,
                "pid": sandbox.pid if sandbox else None,
                "state": sandbox.state.value if sandbox else "stopped",
                "restarts": sandbox.restarts if sandbox else 0,
            },
            "pending": [{"id": p.id, "prompt": p.text[:200]} for p in (sandbox.pending if sandbox else [])],
            "executions": self.executions,
            "isolation": {
                "mode": self.settings.isolation,
                "walls": ({name: ("up" if w.get("up") else f"DOWN: {w.get('detail')}") for name, w in sandbox.walls.items()}
                          if sandbox else "checked when the worker starts (run any code)"),
            },
            "limits": {
                "exec_timeout": self.settings.exec_timeout,
                "memory_mb": self.settings.memory_mb or "contexts + 1024",
                "max_output_chars": self.settings.max_output_chars,
                "max_load_mb": self.settings.max_load_mb,
                "roots": [str(r) for r in [*self.settings.allowed_roots, *self.extra_roots]],
                "allow_url": self.settings.allow_url,
            },
        }


def answers_by_id(items: list[Any]) -> dict[str, Any]:
    """``[{"id": "q1.0", "answer": "..."}, ...]`` (what form-based clients can fill) as ``{id: answer}``."""
    answers: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) != {"id", "answer"} or not isinstance(item["id"], str):
            raise InvalidInput(f"answers[{i}] must be an object {{\"id\": <pending id>, \"answer\": <text>}}, "
                               f"not {str(item)[:100]}.")
        if item["id"] in answers:
            raise InvalidInput(f"answers lists the id {item['id']!r} twice; give one answer per sub-query.")
        answers[item["id"]] = item["answer"]
    return answers


def _give_back_freed_memory() -> None:
    """Return freed heap to the system. glibc keeps what a big load freed (in the main heap and
    in the arenas of the threads that read, counted and indexed it) for reuse: tens of MB this
    process will not need again. Elsewhere (musl, macOS) there is nothing to do."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


class _SessionText:
    """A context's text as the session holds it (the ``TextSource`` of peek and search): slices
    come from its file, without waiting for (or starting) a worker; searches run in the worker."""

    def __init__(self, session: RlmSession, name: str) -> None:
        self.session, self.name = session, name

    async def slice(self, start: int, end: int) -> str:
        try:
            text = await anyio.to_thread.run_sync(self.session._texts.read, self.name, start, end)
        except OSError as exc:
            raise SourceError(f"Context {self.name!r} could not be read from disk ({exc.strerror or exc}).") from exc
        if text is None:
            raise UnknownContext(f"No context named {self.name!r} is stored; load it again.")
        return text

    async def find(self, pattern: str, **options: Any) -> FindResult:
        sandbox = await self.session.sandbox()
        return await sandbox.find_in_context(self.name, pattern, **options)


def _context_info(ctx: ctxmod.Context) -> str:
    head = ctx.head[:500]
    return (f"The context has {ctx.chars:,} characters in {ctx.lines:,} lines"
            f"{f' from {len(ctx.files)} files' if ctx.files else ''}. Its first characters:\n{head}")
