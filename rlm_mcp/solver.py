"""The RLM loop run by the server: a root model writes code, the sandbox runs it, until FINAL.

Used by the ``rlm_solve`` tool (root reached by sampling or the provider) and by
``rlm_query`` inside sandboxed code when ``--max-depth`` allows a child RLM.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox import SandboxSession

from .backends.base import ChatMessage, SubLlm

__all__ = ["RLM_SYSTEM_PROMPT", "SolveResult", "extract_code", "run_rlm_loop"]

RLM_SYSTEM_PROMPT = """\
You answer a question about a context that is too large to read at once. The context is NOT shown to
you: it is the string variable `context` in a Python REPL that you control by writing code in
```repl
...
``` blocks. Each block runs in the same persistent namespace and you see what it prints (truncated).

In the REPL you also have:
- llm_query(prompt) -> str: ask a sub-model about a piece of text (it can read about 100k characters);
- llm_query_batched(prompts) -> list[str]: many sub-queries at once, answers in order;
- FINAL(answer): give the final answer; FINAL_VAR("name"): the final answer is that variable.
Imports of re, json, math, collections, itertools and other pure modules work.

Work like this: look at the context's size and format first (print len(context), a few slices);
filter it with code (regex, keywords); split what matters into chunks and ask llm_query_batched
focused questions about them; combine the answers with code; check the result; then call FINAL.
Write one or two code blocks per turn and wait for their output. Do not guess before looking.
"""

_CODE = re.compile(r"```(?:repl|python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_FINAL_TEXT = re.compile(r"^\s*FINAL\((.*)\)\s*$", re.DOTALL | re.MULTILINE)

Progress = Callable[[float, "float | None", str], Awaitable[None]]


@dataclass
class SolveResult:
    final: str | None
    iterations: int
    trace: list[dict[str, Any]] = field(default_factory=list)


def extract_code(reply: str) -> list[str]:
    return [block.strip("\n") for block in _CODE.findall(reply) if block.strip()]


def _output_for_model(result: Any, limit: int = 4000) -> str:
    parts = []
    if result.stdout:
        out = result.stdout if len(result.stdout) <= limit else result.stdout[:limit] + "\n[... output truncated]"
        parts.append(out)
    if result.error:
        parts.append(f"Error: {result.error[:2000]}")
    if result.variables:
        shown = ", ".join(f"{k}: {v}" for k, v in list(result.variables.items())[:10])
        parts.append(f"Variables changed: {shown}")
    return "\n".join(parts) or "(no output)"


async def run_rlm_loop(
    question: str,
    sandbox: SandboxSession,
    root: SubLlm,
    *,
    context_info: str,
    max_iterations: int,
    max_tokens: int = 2048,
    progress: Progress | None = None,
    on_step: Callable[[int, str, str | None, Any], None] | None = None,
) -> SolveResult:
    """``on_step(iteration, reply, code, result)`` is told of every code block run (and of replies
    without code, with ``code`` and ``result`` None): the trace records the loop through it."""
    messages: list[ChatMessage] = [
        {"role": "user", "content": f"{context_info}\n\nQuestion: {question}\n\nStart by looking at the context."}
    ]
    trace: list[dict[str, Any]] = []
    for iteration in range(1, max_iterations + 1):
        if progress is not None:
            await progress(iteration - 1, max_iterations, f"root iteration {iteration}/{max_iterations}")
        completion = await root.complete(messages, system=RLM_SYSTEM_PROMPT, max_tokens=max_tokens)
        reply = completion.text
        blocks = extract_code(reply)
        step: dict[str, Any] = {"iteration": iteration, "code_blocks": len(blocks)}
        trace.append(step)
        if not blocks:
            if on_step is not None:
                on_step(iteration, reply, None, None)
            found = _FINAL_TEXT.search(reply)
            if found:
                step["final_from_text"] = True
                return SolveResult(found.group(1).strip().strip("\"'"), iteration, trace)
            messages += [
                {"role": "assistant", "content": reply},
                {"role": "user", "content": "Write code in a ```repl block, or answer with FINAL(answer)."},
            ]
            continue
        outputs = []
        for code in blocks:
            result = await sandbox.execute(code)
            if on_step is not None:
                on_step(iteration, reply, code, result)
            step.setdefault("status", []).append(result.status)
            if result.error:
                step.setdefault("errors", []).append(result.error[:300])
            if result.final is not None:
                step["final"] = True
                return SolveResult(result.final, iteration, trace)
            outputs.append(_output_for_model(result))
        messages += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "REPL output:\n" + "\n---\n".join(outputs)},
        ]
    return SolveResult(None, max_iterations, trace)
