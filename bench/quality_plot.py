"""Accuracy against context length, base vs RLM, one panel per task: ``python quality_plot.py summary.json out.png WINDOW``.

Run by ``bench quality`` with ``bench/.quality-venv``'s Python, where matplotlib is installed, so the
project's own venv does not need it.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TITLE = {"niah": "S-NIAH (exact number)", "oolong": "OOLONG-like (1 - rel. error)", "pairs": "pairs (F1)"}


def _label(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{tokens // 1_000_000}M"
    return f"{tokens // 1000}K" if tokens >= 1000 else str(tokens)


def main(source: str, target: str, window: int) -> None:
    summary = json.load(open(source))
    tasks = [t for t in TITLE if any(s["task"] == t for s in summary)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 4.0), squeeze=False)
    every = [s["tokens"] for s in summary]
    low, high = min(min(every), window) / 1.8, max(max(every), window) * 1.8
    for ax, task in zip(axes[0], tasks):
        rows = sorted((s for s in summary if s["task"] == task), key=lambda s: s["tokens"])
        x = [s["tokens"] for s in rows]
        ax.plot(x, [s["rlm"] for s in rows], "o-", color="tab:blue", label="RLM (rlm-mcp + 135M sub-LLM)")
        ax.plot(x, [s["base"] for s in rows], "s--", color="tab:orange", label="base 135M (cut to 8K)")
        ax.axvline(window, color="grey", linestyle=":", linewidth=1)
        ax.text(window * 1.08, 0.5, "base model's window", color="grey", fontsize=8, rotation=90, va="center")
        ax.set_xscale("log")
        ax.set_ylim(-0.04, 1.06)
        ax.set_xlim(low, high)
        ax.set_xticks(x)
        ax.set_xticklabels([_label(s["target"]) for s in rows])
        ax.minorticks_off()
        ax.set_title(TITLE[task], fontsize=10)
        ax.set_xlabel("context length (o200k tokens)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score (mean over instances)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle("SmolLM2-135M-Instruct: bare model vs RLM", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
