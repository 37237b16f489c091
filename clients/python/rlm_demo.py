"""Play the root model of a Recursive Language Model against the installed ``rlm-mcp`` over stdio.

    python clients/python/rlm_demo.py [--size-mb 8] [--seed 7] [--host-mode] [--protocol 2026-07-28]

Writes a synthetic service log with planted facts, starts ``rlm-mcp --root <tmpdir>`` and does what a
root model would: load, peek, search, then code that chunks the log, maps a sub-LLM over the chunks
with ``llm_query_batched``, reduces in code, verifies and calls ``FINAL``. The sub-LLM, ``tiny_model``,
reads each prompt and follows its instructions; it answers through MCP sampling or, with
``--host-mode``, through ``answer_sub_queries`` when the server pauses. The last line compares the
answer with the ground truth computed from the document: PASS, or FAIL and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters

QUESTION = ("How many ERROR entries does the log hold, which error code is the most frequent (ties: the "
            "smallest code), and what is the access code hidden in it?")
ERRORS = {"E1042": "disk quota exceeded", "E2210": "upstream timeout", "E3307": "invalid token",
          "E4401": "connection reset", "E5093": "checksum mismatch"}
SERVICES = ["api", "auth", "billing", "search", "storage", "worker"]
MESSAGES = ["request served", "cache hit", "cache miss", "session renewed", "job queued", "job done",
            "config reloaded", "health check ok"]


# --- the document -------------------------------------------------------------------------------

def generate_log(size_mb: float, seed: int) -> str:
    """About size_mb of log lines; ~1% ERRORs (one code favoured), WARN decoys that carry codes too,
    one decoy 'access code' line and, somewhere past the first third, the one that holds the code."""
    rng = random.Random(seed)
    codes = sorted(ERRORS)
    weights = [rng.randint(1, 4) for _ in codes]
    weights[rng.randrange(len(codes))] = 10
    letters = "".join(rng.choice(pool) for pool in ("QXZKV", "MRTW"))
    secret = f"{letters}-{rng.randint(1000, 9999)}-{rng.choice('ABCDE')}{rng.choice('NPSY')}"
    needle = f'level=INFO msg="ops note: the access code for the archive vault is {secret}"'
    decoy = 'level=INFO msg="access code rotation scheduled for next week"'
    target = int(size_mb * 1_000_000)
    needle_at, decoy_at = int(target * rng.uniform(0.35, 0.9)), int(target * rng.uniform(0.05, 0.3))
    lines, size, ms = [], 0, 0
    while size < target:
        ms += rng.randint(1, 900)
        t = ms // 1000
        stamp = f"2025-03-{1 + t // 86400:02d}T{t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d}.{ms % 1000:03d}Z"
        head = f"{stamp} {rng.choice(SERVICES)}-{rng.randint(1, 9):02d} req={rng.getrandbits(32):08x}"
        roll = rng.random()
        if roll < 0.01:
            code = rng.choices(codes, weights)[0]
            line = f'{head} level=ERROR code={code} msg="{ERRORS[code]}"'
        elif roll < 0.05:
            line = f'{head} level=WARN code={rng.choice(codes)} msg="retrying after transient failure"'
        else:
            line = f'{head} level=INFO latency_ms={rng.randint(1, 2500)} msg="{rng.choice(MESSAGES)}"'
        if decoy_at is not None and size >= decoy_at:
            line, decoy_at = f"{head} {decoy}", None
        elif needle_at is not None and size >= needle_at:
            line, needle_at = f"{head} {needle}", None
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


def ground_truth(text: str) -> str:
    """The expected answer, straight from the text: no server, no model."""
    counts = Counter(re.findall(r"level=ERROR code=(E\d+)", text))
    top = min(counts, key=lambda c: (-counts[c], c))
    secret = re.search(r"access code for .* is ([A-Z]{2}-\d{4}-[A-Z]{2})", text).group(1)
    return f"errors={sum(counts.values())}; top={top} ({counts[top]}); access_code={secret}"


# --- the sub-LLM: a tiny deterministic "model" that reads its prompt ------------------------------

def tiny_model(prompt: str) -> str:
    """Follows the two kinds of instruction the root writes ("Count the lines matching the regex
    `...`", "Quote every line that mentions `...`") over the text after the "LOG CHUNK" header."""
    instructions, _, rest = prompt.partition("\nLOG CHUNK")
    text = rest.split("\n", 1)[1] if "\n" in rest else ""
    counts: Counter[str] = Counter()
    for pattern in re.findall(r"Count the lines matching the regex `([^`]+)`", instructions):
        counts.update(m.group(1) for m in re.finditer(pattern, text))
    phrases = [p.lower() for p in re.findall(r"mentions `([^`]+)`", instructions)]
    quotes = [line for line in text.splitlines() if any(p in line.lower() for p in phrases)]
    return json.dumps({"counts": dict(sorted(counts.items())), "quotes": quotes})


class Sampler:
    """The client's sampling callback: the server's llm_query calls land here."""

    calls = 0

    async def __call__(self, context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        prompt = params.messages[-1].content.text
        self.calls += 1
        return types.CreateMessageResult(role="assistant", model="tiny-model",
                                         content=types.TextContent(type="text", text=tiny_model(prompt)))


# --- the root model's plan: three exec_python steps in one persistent REPL ------------------------

CHUNK_STEP = r'''
import re
if FILTER:   # keep only lines the question can be about: every sub-query passes through the root's window
    keep = re.compile(r"level=ERROR|access code", re.IGNORECASE)
    source = "\n".join(line for line in context.splitlines() if keep.search(line)) + "\n"
else:
    source = context
chunks, pos = [], 0
while pos < len(source):   # cut at line ends, so no line is split between two sub-queries
    end = source.find("\n", min(pos + CHUNK, len(source) - 1))
    end = len(source) if end == -1 else end + 1
    chunks.append(source[pos:end])
    pos = end
print(f"{len(source):,} chars -> {len(chunks)} chunk(s) of <= {CHUNK:,} chars")
'''

MAP_STEP = r'''
import json
task = ("You are reading one chunk of a large service log.\n"
        "1. Count the lines matching the regex `level=ERROR code=(E\\d+)`, per error code.\n"
        "2. Quote every line that mentions `access code`.\n"
        'Reply with JSON only: {"counts": {"<code>": <n>}, "quotes": ["<line>"]}\n')
answers = llm_query_batched([f"{task}\nLOG CHUNK {i + 1}/{len(chunks)}:\n{c}" for i, c in enumerate(chunks)])
counts, quotes, failed = {}, [], []
for i, answer in enumerate(answers):
    try:
        part = json.loads(answer)
    except ValueError:
        failed.append(i)
        continue
    for code, n in part["counts"].items():
        counts[code] = counts.get(code, 0) + n
    quotes.extend(part["quotes"])
print(f"{len(answers)} answers ({len(failed)} unusable): {sum(counts.values())} ERROR lines, {counts}")
print("quoted:", quotes)
'''

FINAL_STEP = r'''
direct = len(re.findall(r"level=ERROR code=E\d+", context))   # verify the map step with a direct count
print(f"sub-LLM total {sum(counts.values())}, direct count {direct}, failed chunks {failed}")
top = min(counts, key=lambda c: (-counts[c], c))
found = [m for q in quotes for m in re.findall(r"\b[A-Z]{2}-\d{4}-[A-Z]{2}\b", q)]
FINAL(f"errors={sum(counts.values())}; top={top} ({counts[top]}); access_code={found[0] if found else 'none'}")
'''


class ToolFailed(Exception):
    """A tool answered with isError: a root model would read the message and try again; we stop."""


class Root:
    """Calls tools like a root model would, and prints the trajectory with timings."""

    def __init__(self, client: Client, sampler: Sampler) -> None:
        self.client, self.sampler, self.step = client, sampler, 0

    async def call(self, tool: str, **args) -> dict:
        self.step += 1
        asked, started = self.sampler.calls, time.perf_counter()
        result = await self.client.call_tool(tool, args)
        code = args.pop("code", "")  # exec_python: show the code itself, line by line
        shown = ", ".join(f"{k}={_short(v, 60)}" for k, v in args.items())
        print(f"[{self.step:2}] {tool}({shown})  {time.perf_counter() - started:.2f}s")
        print("".join(f"       > {line}\n" for line in code.strip().splitlines()), end="")
        if result.is_error:
            raise ToolFailed(f"{tool} failed: {result.content[0].text}")
        data = result.structured_content
        for key in SHOW.get(tool, ()):
            if data.get(key) not in (None, "", [], {}):
                print(f"     {key}: {_brief(key, data[key])}".replace(": \n", ":\n"))
        if self.sampler.calls > asked:
            print(f"     (sampling: the tiny model answered {self.sampler.calls - asked} sub-queries)")
        return data

    async def answer_pauses(self, result: dict) -> dict:
        """Host mode: read every pending prompt in full, answer it with the tiny model, resume."""
        while result["status"] == "paused":
            answers, pages = {}, 0
            for item in result["pending"]:
                prompt = item["prompt"]
                while len(prompt) < item.get("prompt_chars", len(prompt)):  # cut to fit the output cap
                    page = await self.client.call_tool("get_variable", {"name": f"pending:{item['id']}",
                                                                        "start": len(prompt)})
                    prompt, pages = prompt + page.structured_content["text"], pages + 1
                answers[item["id"]] = tiny_model(prompt)
            read = f"read cut prompts in full with {pages} get_variable call(s); " if pages else ""
            print(f"     (host mode: {read}the tiny model answered {len(answers)} pending prompt(s))")
            result = await self.call("answer_sub_queries", answers=answers)
        return result


# What the trajectory shows of each tool's result.
SHOW = {"load_context": ["chars", "lines", "tokens", "token_encoding"], "peek": ["start", "end", "text"],
        "search": ["matches", "truncated"], "exec_python": ["status", "stdout", "error", "final", "pending"],
        "answer_sub_queries": ["status", "stdout", "error", "final", "pending"],
        "rlm_status": ["sub_llm", "sub_queries", "tokens"]}


def _brief(key: str, value) -> str:
    if key == "matches":
        first = value[0]["text"].strip().splitlines()
        return f"{len(value)} shown, first on line {value[0]['line']}: {_short(first[len(first) // 2], 110)}"
    if key == "pending":
        return f"{len(value)} sub-queries waiting, ids {[p['id'] for p in value]}"
    if key == "sub_llm":
        return f"{value['mode']} ({value['reason']})"
    if isinstance(value, str) and "\n" in value.strip():
        return "".join(f"\n       | {_short(line, 130)}" for line in value.strip().splitlines()[:4])
    return _short(value.strip() if isinstance(value, str) else value, 130)


def _short(value, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text):,} chars]"


async def solve(root: Root, doc: Path, host_mode: bool) -> tuple[dict, dict]:
    """The root model's moves: look, search, then chunk + map + reduce in code, verify, FINAL."""
    await root.call("load_context", path=str(doc))
    await root.call("peek", start=0, end=3, unit="lines")
    await root.call("peek", start=-2, unit="lines")
    await root.call("search", pattern=r"level=ERROR code=E\d+", max_results=3, window=60)
    await root.call("search", pattern="access code", ignore_case=True, max_results=3, window=80)
    # The sampling sub-LLM can read whole chunks; in host mode the root answers every sub-query
    # itself, so it filters first and keeps the prompts small.
    plan = "FILTER = True\nCHUNK = 20_000" if host_mode else "FILTER = False\nCHUNK = 250_000"
    await root.call("exec_python", code=plan + "\n" + CHUNK_STEP)
    await root.answer_pauses(await root.call("exec_python", code=MAP_STEP))
    done = await root.answer_pauses(await root.call("exec_python", code=FINAL_STEP))
    return done, await root.call("rlm_status")


async def main(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlm-demo-") as root_dir:
        text = generate_log(args.size_mb, args.seed)
        doc = Path(root_dir) / "service.log"
        doc.write_text(text)
        expected = ground_truth(text)
        print(f"document: {doc} ({len(text):,} chars, seed {args.seed}, {time.perf_counter() - began:.2f}s)")
        print(f"question: {QUESTION}\n")
        # The map step reads the whole log in the sampling plan, so the token budget follows its size.
        flags = ["--root", root_dir, "--log-level", "WARNING", "--max-sub-tokens", str(max(2_000_000, len(text)))]
        flags += ["--sub-llm", "host"] if args.host_mode else ["--sub-llm", "sampling"]
        here = Path(sys.executable).parent / "rlm-mcp"  # the rlm-mcp of this venv, else the one on PATH
        params = StdioServerParameters(command=str(here) if here.exists() else "rlm-mcp", args=flags)
        print(f"server: {params.command} {' '.join(flags)}\n")
        sampler = Sampler()
        # "legacy" speaks protocol 2025-11-25 (sampling during the tool call, what hosts speak today);
        # "auto" negotiates 2026-07-28, where sub-queries ride input-required rounds instead.
        mode = "auto" if args.protocol == "2026-07-28" else "legacy"
        async with Client(params, mode=mode, sampling_callback=sampler) as client:
            try:
                done, status = await solve(Root(client, sampler), doc, args.host_mode)
            except ToolFailed as exc:
                print(f"FAIL: {exc}")
                return 1
    answer = done.get("final")
    print(f"\nsub-queries: {status['sub_queries']['used']}, tokens: {status['tokens']['used']:,}, "
          f"total {time.perf_counter() - began:.2f}s")
    print(f"expected: {expected}")
    if answer != expected:
        print(f"FAIL: the final answer {answer!r} does not match the ground truth")
        return 1
    print(f"PASS: {answer}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=8.0, help="size of the generated log (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated log (default 7)")
    parser.add_argument("--host-mode", action="store_true",
                        help="run the server with --sub-llm host and answer its paused sub-queries here")
    parser.add_argument("--protocol", choices=["2025-11-25", "2026-07-28"], default="2025-11-25",
                        help="MCP protocol version the client asks for (default 2025-11-25)")
    sys.exit(anyio.run(main, parser.parse_args()))
