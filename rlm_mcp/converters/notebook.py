"""Jupyter notebooks: every cell in order after a marker line, its outputs as text after another::

    --- cell 3 [code] ---
    print(total)
    --- cell 3 output ---
    42

Outputs kept: streams, ``text/plain`` of results and displays (``text/markdown`` when there is no
plain text), and errors as ``Name: value`` with the traceback's ANSI colours removed. Images and
other binary outputs become a ``[image/png output]`` line. Formats 4 and 3 (``worksheets``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import Budget, ConversionError, Converted

__all__ = ["convert"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _text(value: Any) -> str:
    """Notebook text fields are a string or a list of lines."""
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return "" if value is None else str(value)


def _output(out: dict[str, Any]) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        return _text(out.get("text"))
    if kind == "error":
        trace = _ANSI.sub("", "\n".join(_text(t) for t in out.get("traceback") or []))
        return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}\n" + (trace + "\n" if trace else "")
    data = out.get("data") or {}
    if kind in ("pyout", "display_data", "execute_result") and not data:  # format 3 keeps it flat
        data = {"text/plain": out.get("text")} if "text" in out else {}
    for mime in ("text/plain", "text/markdown"):
        if mime in data:
            return _text(data[mime])
    return "".join(f"[{mime} output]\n" for mime in data)


def _cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(nb.get("cells"), list):
        return nb["cells"]
    sheets = nb.get("worksheets")
    if isinstance(sheets, list):
        return [c for s in sheets if isinstance(s, dict) for c in s.get("cells") or []]
    raise ConversionError("not a Jupyter notebook: no cells")


def notebook_to_text(nb: dict[str, Any]) -> str:
    parts = []
    for i, cell in enumerate(_cells(nb), 1):
        if not isinstance(cell, dict):
            continue
        kind = cell.get("cell_type", "code")
        source = _text(cell.get("source", cell.get("input")))
        parts.append(f"--- cell {i} [{kind}] ---\n")
        if source:
            parts.append(source if source.endswith("\n") else source + "\n")
        outputs = "".join(_output(o) for o in cell.get("outputs") or [] if isinstance(o, dict))
        if outputs:
            parts.append(f"--- cell {i} output ---\n")
            parts.append(outputs if outputs.endswith("\n") else outputs + "\n")
    return "".join(parts)


def convert(data: bytes, name: str, budget: Budget) -> Converted:
    try:
        nb = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConversionError(f"not a valid notebook (JSON: {str(exc)[:120]})") from exc
    if not isinstance(nb, dict):
        raise ConversionError("not a Jupyter notebook: the JSON is not an object")
    text = notebook_to_text(nb)
    budget.spend(len(text), name)
    return Converted("notebook", [("", text)])
