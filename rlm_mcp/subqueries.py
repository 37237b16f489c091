"""Sub-queries: which backend answers them, what they may spend, and how batches run.

Per session, a ``SubQueryRouter`` picks the backend for each tool call
(``select``), because what is possible depends on the request: a client on
protocol 2025-11-25 that declared sampling can be sampled during the call; one on
2026-07-28 cannot send or receive requests mid-call, but can answer sampling
requests carried by input-required rounds ("mrtr"); otherwise a configured
provider answers, or a configured command-line model (``--llm-command``); otherwise
the root model itself does (host mode).

``run`` serves one request frame from the sandbox: it checks sizes and budgets,
runs a batch concurrently under a capacity limiter with answers kept in order, and
turns one item's failure into that item's error without losing the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from sandbox import PAUSE, SubQueryFailure, SubQueryRequest

from .backends.base import SubLlm
from .backends.sampling import SamplingBackend, client_can_sample
from .config import Settings
from .errors import BackendUnavailable, BudgetExceeded, RlmError, SubQueryFailed
from .subcache import SubQueryCache
from .usage import UsageBook, token_record
from .tokens import get_token_counter
from .trace import Tracer

__all__ = ["Budget", "Selection", "SubQueryRouter", "SUB_SYSTEM_PROMPT"]

logger = logging.getLogger(__name__)

Mode = Literal["sampling", "provider", "command", "host", "mrtr", "none"]

SUB_SYSTEM_PROMPT = (
    "You are a sub-model called from a program that is analysing a large document piece by piece. "
    "Answer the request using only the text it gives you. Be exact and brief: no preamble, no "
    "restating the question. If the text does not contain the answer, say so plainly."
)

Progress = Callable[[float, "float | None", str], Awaitable[None]]


@dataclass
class Budget:
    """What one session may spend on sub-queries; each limit is a flag."""

    max_count: int
    max_tokens: int
    max_seconds: float
    count: int = 0
    tokens: int = 0
    seconds: float = 0.0
    reserved: int = 0
    """Prompt tokens of calls in flight: a batch must not overshoot the token budget."""

    def refusal(self, wanted: int = 1, tokens: int = 0) -> str | None:
        if self.count + wanted > self.max_count:
            return (f"sub-query budget spent: {self.count} of {self.max_count} used this session "
                    "(raise --max-sub-queries, or reset_session)")
        if self.tokens + self.reserved + tokens > self.max_tokens or self.tokens >= self.max_tokens:
            return (f"sub-query token budget spent: {self.tokens:,} of {self.max_tokens:,} tokens "
                    "(raise --max-sub-tokens)")
        if self.seconds >= self.max_seconds:
            return (f"sub-query time budget spent: {self.seconds:.0f} of {self.max_seconds:.0f} s "
                    "(raise --max-sub-seconds)")
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sub_queries": {"used": self.count, "max": self.max_count, "left": max(self.max_count - self.count, 0)},
            "tokens": {"used": self.tokens, "max": self.max_tokens, "left": max(self.max_tokens - self.tokens, 0)},
            "seconds": {"used": round(self.seconds, 2), "max": self.max_seconds},
        }


@dataclass(frozen=True)
class Selection:
    mode: Mode
    reason: str
    backend: SubLlm | None = field(default=None, compare=False)

    @property
    def can_root(self) -> bool:
        """Whether this backend can also play the root model (rlm_solve, rlm_query)."""
        return self.backend is not None


class SubQueryRouter:
    def __init__(self, settings: Settings, provider: SubLlm | None = None, tracer: Tracer | None = None) -> None:
        self.settings = settings
        self.budget = Budget(settings.max_sub_queries, settings.max_sub_tokens, settings.max_sub_seconds)
        self.limiter = anyio.CapacityLimiter(settings.max_concurrency)
        self._provider = provider
        self._command: SubLlm | None = None
        self.cache = SubQueryCache() if settings.cache_sub_queries else None
        self.usage = UsageBook()
        self._system_counts: dict[str, int] = {}
        self.tracer = tracer
        self.last: Selection | None = None
        self._provider_probe: dict[str, Any] = {}

    # -- choosing ---------------------------------------------------------------------------

    def provider(self) -> SubLlm | None:
        if self._provider is None and self.settings.llm_base_url:
            from .backends.provider import ProviderBackend

            self._provider = ProviderBackend(
                self.settings.llm_base_url,
                self.settings.llm_model,
                self.settings.llm_api_key,
                timeout=self.settings.sub_query_timeout,
                max_retries=self.settings.llm_retries,
            )
        return self._provider

    async def probe_provider(self) -> None:
        """Check that the configured provider answers; rlm_status shows the outcome."""
        provider = self.provider()
        probe = getattr(provider, "probe", None)
        if probe is not None:
            self._provider_probe = await probe()

    def command(self) -> SubLlm | None:
        """The ``--llm-command`` backend, made on first use (its program was checked at start-up)."""
        if self._command is None and self.settings.llm_command:
            from .backends.command import CommandBackend

            # Room for the note that says the output was cut, under the answer cap of complete().
            max_output = max(self.settings.max_prompt_chars - 200, 1000)
            self._command = CommandBackend(self.settings.llm_command, timeout=self.settings.sub_query_timeout,
                                           max_concurrency=self.settings.max_concurrency, max_output=max_output)
        return self._command

    def select(self, ctx: Any) -> Selection:
        """The backend for sub-queries made during this tool call, and why."""
        wanted = self.settings.sub_llm
        can_sample = ctx is not None and client_can_sample(ctx)
        live_channel = can_sample and bool(getattr(ctx.session, "can_send_request", False))
        provider = self.provider()
        command = self.command()
        if wanted in ("auto", "sampling") and live_channel:
            selection = Selection("sampling", "the client declared sampling and can take requests during a tool "
                                  "call (protocol 2025-11-25)", SamplingBackend(ctx, self.settings.model_hints))
        elif wanted in ("auto", "sampling") and can_sample:
            selection = Selection("mrtr", "the client declared sampling on protocol 2026-07-28: sub-queries ride "
                                  "input-required rounds of the tool call")
        elif wanted == "sampling":
            selection = Selection("none", "--sub-llm sampling, but this client did not declare the sampling "
                                  "capability")
        elif wanted in ("auto", "provider") and provider is not None:
            selection = Selection("provider", f"OpenAI-compatible provider at {self.settings.llm_base_url}", provider)
        elif wanted == "provider":
            selection = Selection("none", "--sub-llm provider, but no --llm-base-url is configured")
        elif wanted in ("auto", "command") and command is not None:
            selection = Selection("command", f"a local command-line model: {getattr(command, 'model', 'command')}",
                                  command)
        elif wanted == "command":
            selection = Selection("none", "--sub-llm command, but no --llm-command is configured")
        else:
            why = ("--sub-llm host" if wanted == "host"
                   else "the client cannot sample and no provider or command is configured")
            selection = Selection("host", f"{why}: exec_python pauses on llm_query and the root model answers "
                                  "with answer_sub_queries")
        self.last = selection
        return selection

    # -- running ----------------------------------------------------------------------------

    async def run(
        self,
        request: SubQueryRequest,
        selection: Selection,
        progress: Progress | None = None,
        rlm_child: Callable[[str, str, Selection], Awaitable[str]] | None = None,
    ) -> Sequence[str | SubQueryFailure] | Any:
        n = len(request.prompts)
        refusal = self.budget.refusal(n)
        if refusal is not None:
            return [SubQueryFailure(refusal)] * n
        oversized = [len(p) > self.settings.max_prompt_chars for p in request.prompts]
        if selection.mode in ("host", "mrtr"):
            if any(oversized):
                return [self._too_long(p) for p in request.prompts]
            return PAUSE
        backend = selection.backend
        if backend is None:
            return [SubQueryFailure(f"no sub-LLM is available: {selection.reason}")] * n
        results: list[str | SubQueryFailure] = [SubQueryFailure("not run")] * n
        done = 0

        async def one(index: int) -> None:
            nonlocal done
            prompt = request.prompts[index]
            if oversized[index]:
                results[index] = self._too_long(prompt)
                return
            async with self.limiter:
                try:
                    if request.kind == "rlm" and rlm_child is not None:
                        context = (request.contexts or [None] * n)[index] or ""
                        results[index] = await rlm_child(prompt, context, selection)
                    else:
                        if request.kind == "rlm":
                            context = (request.contexts or [None] * n)[index]
                            prompt = f"{prompt}\n\n{context}" if context else prompt
                        results[index] = await self.complete(backend, prompt)
                except (RlmError, TimeoutError) as exc:
                    results[index] = SubQueryFailure(str(exc) or type(exc).__name__)
            done += 1
            if progress is not None and n > 1:
                await progress(done, n, f"sub-queries: {done}/{n} answered")

        async with anyio.create_task_group() as tg:
            for index in range(n):
                tg.start_soon(one, index)
        return results

    def _too_long(self, prompt: str) -> str | SubQueryFailure:
        if len(prompt) <= self.settings.max_prompt_chars:
            return SubQueryFailure("not run: another prompt of this batch was too long")
        return SubQueryFailure(
            f"prompt of {len(prompt):,} characters is over the {self.settings.max_prompt_chars:,} cap "
            "(--max-prompt-chars); send smaller chunks"
        )

    async def complete(self, backend: SubLlm, prompt: str, system: str | None = SUB_SYSTEM_PROMPT) -> str:
        """One sub-query through ``backend``; with --cache-sub-queries, an identical one asked before
        (or in flight) in this session answers it without a call of its own."""
        if self.cache is None:
            return await self._complete(backend, prompt, system)
        model = getattr(backend, "model", None)
        key = self.cache.key(backend.name, model, system, prompt, self.settings.sub_max_tokens)
        text, hit = await self.cache.run(key, lambda: self._complete(backend, prompt, system))
        if hit:
            self.usage.hit(backend.name)
        if hit and self.tracer is not None:
            self.tracer.sub_query(backend=backend.name, prompt=prompt, answer=text, seconds=0.0,
                                  tokens={"prompt": 0, "answer": 0}, model=model, cached=True)
        return text

    async def _complete(self, backend: SubLlm, prompt: str, system: str | None) -> str:
        """One sub-query through ``backend``, within the per-call timeout and the budgets.

        The prompt's tokens are counted and reserved before the call, so the calls of a
        batch running at once cannot together overshoot the token budget."""
        counter = get_token_counter()
        counted_prompt = await counter.acount(prompt)
        refusal = self.budget.refusal(1, counted_prompt)
        if refusal is not None:
            raise BudgetExceeded(refusal)
        self.budget.count += 1
        self.budget.reserved += counted_prompt
        started = time.monotonic()
        error: str | None = None
        text = ""
        tokens: dict[str, Any] | None = None
        try:
            with anyio.fail_after(self.settings.sub_query_timeout * 2 + 5):
                completion = await backend.complete([{"role": "user", "content": prompt}], system=system,
                                                    max_tokens=self.settings.sub_max_tokens)
            text = completion.text
            tokens = await self._tokens(counter, completion, system, counted_prompt)
            if len(text) > self.settings.max_prompt_chars:
                # The same cap as host-mode answers: a model that ignores max_tokens cannot flood the worker.
                raise SubQueryFailed(
                    f"the sub-LLM's answer has {len(text):,} characters, over the "
                    f"{self.settings.max_prompt_chars:,} cap (--max-prompt-chars)"
                )
            return text
        except TimeoutError as exc:
            error = f"the sub-query took longer than {self.settings.sub_query_timeout:g} s"
            raise SubQueryFailed(error) from exc
        except (SubQueryFailed, BackendUnavailable) as exc:
            error = str(exc)
            raise
        finally:
            elapsed = time.monotonic() - started
            self.budget.reserved -= counted_prompt
            if tokens is not None:
                self.budget.tokens += tokens["prompt"] + tokens["answer"]
            self.budget.seconds += elapsed
            self.usage.add(backend.name, tokens, failed=tokens is None or error is not None)
            if self.tracer is not None:
                self.tracer.sub_query(backend=backend.name, prompt=prompt, answer=text, error=error,
                                      seconds=elapsed, tokens=tokens, model=getattr(backend, "model", None))

    async def _tokens(self, counter: Any, completion: Any, system: str | None, counted_prompt: int
                      ) -> dict[str, Any]:
        """Tokens of one answered call: the backend's figures where it gave them, else counted here
        over what the model read (the system prompt too) and wrote."""
        prompt_tokens, prompt_source = completion.prompt_tokens, "reported"
        if prompt_tokens is None:
            prompt_tokens, prompt_source = counted_prompt + await self._system_tokens(counter, system), "counted"
        answer_tokens, answer_source = completion.completion_tokens, "reported"
        if answer_tokens is None:
            answer_tokens, answer_source = await counter.acount(completion.text), "counted"
        return token_record(prompt_tokens, answer_tokens, prompt_source, answer_source, counter.encoding)

    async def _system_tokens(self, counter: Any, system: str | None) -> int:
        if not system:
            return 0
        if system not in self._system_counts:  # a handful of fixed prompts: count each once
            self._system_counts[system] = await counter.acount(system)
        return self._system_counts[system]

    async def account_host_answers(self, prompts: Sequence[str], answers: Sequence[str]) -> None:
        """Host and mrtr answers come from the client: count them against the budgets too,
        with the same token counts the other backends get."""
        counter = get_token_counter()
        self.budget.count += len(answers)
        for prompt, answer in zip(prompts, answers, strict=False):
            tokens = token_record(await counter.acount(prompt), await counter.acount(answer), "counted", "counted",
                                  counter.encoding)
            self.budget.tokens += tokens["prompt"] + tokens["answer"]
            self.usage.add("client", tokens)
            if self.tracer is not None:
                self.tracer.sub_query(backend="client", prompt=prompt, answer=answer, tokens=tokens)

    def status(self) -> dict[str, Any]:
        selection = self.last
        info: dict[str, Any] = {
            "configured": self.settings.sub_llm,
            "mode": selection.mode if selection else None,
            "reason": selection.reason if selection else "decided at the first tool call",
            "max_concurrency": self.settings.max_concurrency,
            "per_call_max_tokens": self.settings.sub_max_tokens,
            "cache": self.cache.status() if self.cache is not None else {"enabled": False},
            "usage": self.usage.as_dict(),
        }
        if self.settings.llm_base_url:
            info["provider"] = {"base_url": self.settings.llm_base_url, "model": self.settings.llm_model,
                                **self._provider_probe}
        command = self.command()
        if command is not None:
            # Program and masked arguments only: never the environment, never a key in the arguments.
            info["command"] = command.describe()  # type: ignore[attr-defined]
        return info

    async def aclose(self) -> None:
        if self._provider is not None:
            await self._provider.aclose()
        if self._command is not None:
            await self._command.aclose()
