"""Batched sub-queries through the real server: how close a batch gets to ideal concurrency.

The server runs over stdio (`rlm-mcp --llm-base-url ...`) against a loopback OpenAI-compatible
endpoint that answers every request after a fixed latency. One `exec_python` call runs
`llm_query_batched` on 64 prompts at `--max-concurrency 8`. Ideal time: 64 x latency / 8. The
figure is measured wall time of the whole tool call (client -> server -> worker -> 64 HTTP calls ->
back) over the ideal; the target is <= 1.1. A trivial `exec_python` round trip is measured in the
same run to show how much of the overhead is the tool call itself.
"""

from __future__ import annotations

import tempfile
import time

import anyio

from ._common import Report, fmt_s, median
from .fake_openai import serve

PROMPTS = 64
CONCURRENCY = 8
LATENCY = 0.2
CODE = f"answers = llm_query_batched([f'question {{i}}' for i in range({PROMPTS})])\nprint(len(answers))"


async def _main(quick: bool) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    report = Report("subllm", quick, __doc__.split("\n\n", 1)[1] if __doc__ else "")
    report.start()
    runs = 3 if quick else 7
    with serve(LATENCY) as url, tempfile.TemporaryDirectory() as tmp:
        params = StdioServerParameters(command="rlm-mcp", args=[
            "--root", tmp, "--llm-base-url", url, "--llm-model", "bench",
            "--max-concurrency", str(CONCURRENCY), "--log-level", "WARNING"])
        async with Client(params, mode="legacy") as client:
            trivial = []
            for _ in range(50):
                t0 = time.perf_counter()
                await client.call_tool("exec_python", {"code": "x = 1"})
                trivial.append(time.perf_counter() - t0)
            batches = []
            for _ in range(runs):
                t0 = time.perf_counter()
                result = await client.call_tool("exec_python", {"code": CODE})
                batches.append(time.perf_counter() - t0)
                data = result.structured_content or {}
                if result.is_error or data.get("stdout") != f"{PROMPTS}\n":
                    raise SystemExit(f"the batch failed: {data or result.content}")
            status = (await client.call_tool("rlm_status", {})).structured_content
    ideal = PROMPTS * LATENCY / CONCURRENCY
    report.row("batch of 64 at concurrency 8, median", fmt_s(median(batches)), note=f"{runs} runs")
    report.row("ideal (64 x 0.2 s / 8)", fmt_s(ideal))
    report.row("batch / ideal", f"{median(batches) / ideal:.3f}", "<= 1.1")
    report.row("trivial exec_python round trip, median", fmt_s(median(trivial)), note="50 runs")
    report.row("sub-queries counted by rlm_status", str(status["sub_queries"]["used"]),
               note=f"expected {PROMPTS * runs}")
    report.write()


def run(quick: bool = False) -> int:
    anyio.run(_main, quick)
    return 0
