"""Trajectories: every execution and sub-query of a session as JSON lines (``--trace-dir``).

One file per session, appended as events happen, flushed after each tool call.
Long texts are kept whole: the trace is for debugging and for the benchmarks.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["Tracer"]


class Tracer:
    def __init__(self, directory: Path, label: str) -> None:
        self.path = directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{label}.jsonl"
        self._file: IO[str] | None = None

    def write(self, event: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8", errors="replace")
        record = {"ts": round(time.time(), 3), **event}
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
