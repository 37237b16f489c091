"""Tokens in and out per sub-LLM backend, as the backend reported them or as rlm-mcp counted them.

A provider's ``usage`` is the backend's word and is taken as is ("reported"). Sampling
results, command-line models and host-mode answers say nothing, so their tokens are counted
here with the session's tokenizer (o200k_base, or an estimate when no BPE file could be
loaded: ``counted_with`` names which) over what the model read (system prompt and prompt)
and what it wrote ("counted"). The two are kept apart so a reader knows which figures are
exact for that model and which are one tokenizer's view of the text.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["Source", "UsageBook", "token_record"]

Source = Literal["reported", "counted"]


def token_record(prompt: int | None, answer: int | None, prompt_source: Source, answer_source: Source,
                 encoding: str) -> dict[str, Any]:
    """A sub-query's ``tokens`` in the trace: the two figures, where each came from, and the
    tokenizer when rlm-mcp counted one."""
    record: dict[str, Any] = {"prompt": prompt, "answer": answer, "prompt_source": prompt_source,
                              "answer_source": answer_source}
    if "counted" in (prompt_source, answer_source):
        record["counted_with"] = encoding
    return record


def _empty() -> dict[str, Any]:
    return {"calls": 0, "failed": 0, "cached": 0,
            "tokens_in": {"reported": 0, "counted": 0}, "tokens_out": {"reported": 0, "counted": 0}}


class UsageBook:
    """Per backend name: calls, failures, cache hits, and tokens in/out split by where they came from."""

    def __init__(self) -> None:
        self._by_backend: dict[str, dict[str, Any]] = {}

    def _entry(self, backend: str) -> dict[str, Any]:
        return self._by_backend.setdefault(backend, _empty())

    def add(self, backend: str, tokens: dict[str, Any] | None, *, failed: bool = False) -> None:
        entry = self._entry(backend)
        entry["calls"] += 1
        if failed:
            entry["failed"] += 1
        if tokens:
            for side, key in (("tokens_in", "prompt"), ("tokens_out", "answer")):
                if tokens.get(key) is not None:
                    entry[side][tokens[f"{key}_source"]] += tokens[key]
            if tokens.get("counted_with"):
                entry["counted_with"] = tokens["counted_with"]

    def hit(self, backend: str) -> None:
        self._entry(backend)["cached"] += 1

    def as_dict(self) -> dict[str, Any]:
        return {name: {**entry, "tokens_in": dict(entry["tokens_in"]), "tokens_out": dict(entry["tokens_out"])}
                for name, entry in self._by_backend.items()}
