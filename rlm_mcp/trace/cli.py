"""``rlm-mcp trace view FILE [-o out.html]`` and ``rlm-mcp trace export FILE --format rlm [-o out.jsonl]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .export import to_rlm_records
from .format import read_trace
from .view import render_page

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm-mcp trace", description="Look at a session recorded with --trace-dir.")
    sub = parser.add_subparsers(dest="command", required=True)
    view = sub.add_parser("view", help="write one self-contained HTML page (open it in any browser, offline)")
    view.add_argument("file", type=Path, help="a .jsonl trace from --trace-dir")
    view.add_argument("-o", "--output", type=Path, help="the page to write (default: FILE with .html)")
    export = sub.add_parser("export", help="convert to another tool's log format")
    export.add_argument("file", type=Path, help="a .jsonl trace from --trace-dir")
    export.add_argument("--format", choices=["rlm"], default="rlm",
                        help="rlm: the reference RLM's JSONL logs (alexzhang13/rlm), for its visualizer")
    export.add_argument("-o", "--output", type=Path, help="the file to write (default: FILE with .rlm.jsonl)")
    return parser


def _private(path: Path) -> IO[str]:
    """Open for writing, 0600 when created: the page and the export hold the trace's data."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"{args.file} is not a file")
    trajectory = read_trace(args.file)
    if not trajectory.header and not trajectory.events:
        parser.error(f"{args.file} holds no trace records")
    if args.command == "view":
        out = args.output or args.file.with_suffix(".html")
        with _private(out) as f:
            f.write(render_page(trajectory, title=f"rlm-mcp trajectory: {args.file.name}"))
    else:
        out = args.output or args.file.with_suffix(".rlm.jsonl")
        with _private(out) as f:
            for record in to_rlm_records(trajectory):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    note = f" ({trajectory.skipped} unreadable lines skipped)" if trajectory.skipped else ""
    print(f"wrote {out}{note}", file=sys.stderr)
    return 0
