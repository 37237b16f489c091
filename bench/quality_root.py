"""The scripted root model for ``bench quality``: the paper's strategies as code sent to ``exec_python``.

A real root model would read the question, peek at the context, write code, read what it printed
and write more. Here that loop is played by fixed strategies, one per task, over the REAL
``rlm-mcp`` server (stdio, SDK ``Client``, ``mode="legacy"``). Each turn is one ``exec_python`` call;
the driver reads the JSON line the code printed (``STATS {...}``) to choose the next turn, as a root
model reads stdout. The strategies see the question and what the tools return, never the gold
answer. What they may use is what a root model brings: the question's own words as regex priors, the
record format seen in the peek, and code to aggregate and check what the sub-LLM says.

The sub-LLM is tiny (SmolLM2-135M), so every sub-query is short and asks one closed question
(extract one number from a few sentences; label one review), and answers are validated in code:
an extracted number must occur in the text it came from and sit in a sentence naming the key; a label
must parse as positive or negative, else the review is asked again in other words.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["Root", "STRATEGIES"]

BATCH = 100  # records labelled per exec_python turn (one llm_query_batched each)


class Root:
    """One MCP session seen from the root's side: exec turns, final answers, budget deltas."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.turns = 0

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.client.call_tool(tool, args)
        if result.is_error:
            text = " ".join(getattr(c, "text", "") for c in result.content)
            raise RuntimeError(f"{tool} failed: {text[:500]}")
        return result.structured_content or {}

    async def exec(self, code: str) -> dict[str, Any]:
        self.turns += 1
        data = await self.call("exec_python", {"code": code})
        if data.get("status") != "ok":
            raise RuntimeError(f"exec_python {data.get('status')}: {data.get('error') or data}"[:800])
        return data

    @staticmethod
    def stats(data: dict[str, Any]) -> dict[str, Any]:
        """The last ``STATS {...}`` line the code printed."""
        found = re.findall(r"^STATS (.*)$", data.get("stdout") or "", re.M)
        return json.loads(found[-1]) if found else {}

    async def final(self, data: dict[str, Any]) -> str | None:
        """The final answer, read in slices when exec_python had to cut it."""
        final = data.get("final")
        if final is None:
            return None
        total = data.get("final_chars", len(final))
        if total <= len(final):
            return final
        parts, start = [], 0
        while start < total:
            piece = await self.call("get_variable", {"name": "FINAL", "start": start})
            parts.append(piece["text"])
            start = piece["end"]
            if not piece["text"]:
                break
        return "".join(parts)


_PEEK = """print(f"{len(context):,} chars, {context.count(chr(10)) + 1:,} lines")
print(context[:400])"""

# -- S-NIAH ----------------------------------------------------------------------------------------

_NIAH_FILTER = """import re, json, collections
key = KEY
words = [re.escape(w) for w in re.split(r"[^A-Za-z0-9]+", key) if w]
key_re = re.compile(r"\\W{0,3}".join(words), re.I)
def around(start, end, reach=300):
    # whole sentences around [start, end): the sub-LLM sees a short, readable window
    a = context.rfind(". ", 0, max(0, start - reach))
    a = a + 2 if a >= 0 and a > start - reach - 300 else max(0, start - reach)
    b = context.find(".", end + reach)
    b = b + 1 if 0 <= b < end + reach + 300 else min(len(context), end + reach)
    return context[a:b]
hits = [m for m in key_re.finditer(context)]
windows = [around(m.start(), m.end()) for m in hits[:50]]
topic = [m for m in re.finditer(r"magic\\s+number", context, re.I)]
print("STATS " + json.dumps({"key_hits": len(hits), "topic_hits": len(topic)}))
for w in windows[:2]:
    print(repr(w[:300]))"""

# When the key itself is nowhere (a paraphrase, a typo), fall back on the question's topic words.
_NIAH_TOPIC = """windows = [around(m.start(), m.end()) for m in topic[:50]]
print("STATS " + json.dumps({"windows": len(windows)}))"""

# Last resort: no prior matched at all, so read everything in chunks (bounded: 400 sub-queries).
_NIAH_SCAN = """size = max(2000, len(context) // 400 + 1)
windows = [context[i:i + size] for i in range(0, len(context), size)]
print("STATS " + json.dumps({"windows": len(windows)}))"""

_NIAH_ASK = """question = f"What is the special magic number for {key}? Answer with the number only."
answers = llm_query_batched([f"{w}\\n\\n{question}" for w in windows])
votes = collections.Counter()
for w, a in zip(windows, answers):
    for n in re.findall(r"(?<!\\d)\\d{7}(?!\\d)", a.replace(",", "")):
        if n in w:  # a number the sub-LLM made up is not evidence
            votes[n] = votes[n] + 1
            break
def names_key(n):
    # verify: the number sits in a sentence that also names the key
    for s in re.split(r"(?<=[.!?])\\s+", context[max(0, context.find(n) - 400):context.find(n) + 20]):
        if n in s and key_re.search(s):
            return True
    return False
ranked = [n for n, c in votes.most_common()]
verified = [n for n in ranked if names_key(n)]
print("STATS " + json.dumps({"asked": len(windows), "accepted": sum(votes.values()),
                             "candidates": ranked[:5], "verified": verified[:3],
                             "sample": [a[:60] for a in answers[:3]]}))"""

# The sub-LLM named no verified number: ask again about the key's own sentences only, then, as a
# checked last resort, read the number off the key's sentence in code.
_NIAH_RETRY = """sentences = []
for m in hits[:50]:
    s = around(m.start(), m.end(), reach=0)  # the key's own sentence
    if s not in sentences:
        sentences.append(s)
answers = llm_query_batched([f"{s}\\n\\nWhat is the special magic number for {key}? Answer with the number only."
                             for s in sentences])
retry = [n for s, a in zip(sentences, answers) for n in re.findall(r"(?<!\\d)\\d{7}(?!\\d)", a)[:1]
         if n in s and names_key(n)]
code_read = [n for s in sentences for n in re.findall(r"(?<!\\d)\\d{7}(?!\\d)", s)[:1] if names_key(n)]
print("STATS " + json.dumps({"retry": retry[:3], "code_read": code_read[:3]}))"""


async def solve_niah(root: Root, question: str) -> tuple[str | None, dict[str, Any]]:
    found = re.search(r"for ([\w-]+)", question)  # the key: the question's own identifier
    key = found.group(1) if found else question
    await root.exec(_PEEK)
    seen = root.stats(await root.exec(_NIAH_FILTER.replace("KEY", repr(key), 1)))
    route = "key regex"
    if not seen.get("key_hits"):
        route = "topic regex" if seen.get("topic_hits") else "full scan"
        await root.exec(_NIAH_TOPIC if seen.get("topic_hits") else _NIAH_SCAN)
    asked = root.stats(await root.exec(_NIAH_ASK))
    info = {"route": route, "sub_answer_used": True, "verified": True}
    if asked.get("verified"):
        answer = asked["verified"][0]
    else:
        again = root.stats(await root.exec(_NIAH_RETRY))
        if again.get("retry"):
            answer = again["retry"][0]
        elif again.get("code_read"):
            answer, info["sub_answer_used"] = again["code_read"][0], False
        else:  # nothing checks out: the sub-LLM's best guess, marked as such
            answer, info["verified"] = (asked.get("candidates") or [""])[0], False
    data = await root.exec(f"FINAL({answer!r})")
    return await root.final(data), info


# -- labelling reviews (OOLONG-like and pairs) -----------------------------------------------------

_LABEL_SETUP = """import re, json
ASK = "Is this review positive or negative? Answer with one word.\\nReview: "
ASK_AGAIN = "Review: {text}\\nWas the customer satisfied? Answer positive or negative."
def parse(a):
    a = a.lower()
    pos = "pos" in a or "satisf" in a and "not" not in a
    neg = "neg" in a or "not satisf" in a or "dissatisf" in a
    if pos and not neg:
        return "positive"
    if neg and not pos:
        return "negative"
    return None
labels = {}
"""

_LABEL_BATCH = """batch = todo[START:END]
answers = llm_query_batched([ASK + text for n, text in batch])
for (n, text), a in zip(batch, answers):
    labels[n] = parse(a)
print("STATS " + json.dumps({"labelled": len(labels), "unparsed": sum(1 for v in labels.values() if v is None),
                             "sample": [a[:40] for a in answers[:3]]}))"""

_LABEL_RETRY = """again = [(n, text) for n, text in todo if labels.get(n) is None]
answers = llm_query_batched([ASK_AGAIN.replace("{text}", text) for n, text in again])
for (n, text), a in zip(again, answers):
    labels[n] = parse(a)
print("STATS " + json.dumps({"asked_again": len(again),
                             "still_unparsed": sum(1 for v in labels.values() if v is None)}))"""


async def _label_all(root: Root, count: int) -> dict[str, Any]:
    await root.exec(_LABEL_SETUP)
    for start in range(0, count, BATCH):
        await root.exec(_LABEL_BATCH.replace("START", str(start)).replace("END", str(start + BATCH)))
    return root.stats(await root.exec(_LABEL_RETRY))


_OOLONG_PARSE = """import re, json
todo = re.findall(r"^Review (\\d+) \\|.*\\| ([^|\\n]+)$", context, re.M)
todo = [(n, text.strip()) for n, text in todo]
print("STATS " + json.dumps({"records": len(todo), "lines": context.count(chr(10)) + 1}))"""

# Reviews the sub-LLM never labelled are counted at the share seen among the labelled ones.
_OOLONG_COUNT = """known = [v for v in labels.values() if v is not None]
positive = sum(1 for v in known if v == "positive")
unknown = len(labels) - len(known)
estimate = positive + (round(unknown * positive / len(known)) if known else 0)
print("STATS " + json.dumps({"positive": positive, "negative": len(known) - positive, "unknown": unknown}))
FINAL(str(estimate))"""


async def solve_oolong(root: Root, question: str) -> tuple[str | None, dict[str, Any]]:
    await root.exec(_PEEK)
    parsed = root.stats(await root.exec(_OOLONG_PARSE))
    retried = await _label_all(root, parsed.get("records", 0))
    data = await root.exec(_OOLONG_COUNT)
    counted = root.stats(data)
    return await root.final(data), {"records": parsed.get("records"), "lines": parsed.get("lines"),
                                    "unparsed_first": retried.get("asked_again"), **counted}


# A pair needs two reviews of one product: reviews of a product seen once are never asked about.
_PAIRS_PARSE = """import re, json, collections
rows = re.findall(r"^Review (\\d+) \\|.*\\| product: ([^|\\n]+?) \\| ([^|\\n]+)$", context, re.M)
per_product = collections.Counter(p for n, p, t in rows)
product = {n: p for n, p, t in rows}
todo = [(n, t.strip()) for n, p, t in rows if per_product[p] > 1]
print("STATS " + json.dumps({"records": len(rows), "asked": len(todo), "products": len(per_product)}))"""

_PAIRS_BUILD = """groups = collections.defaultdict(list)
for n, v in labels.items():
    if v == "negative":  # an unparsed label is left out: a wrong pair costs precision
        groups[product[n]].append(int(n))
pairs = []
for ids in groups.values():
    ids = sorted(ids)
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            pairs.append(f"{ids[i]},{ids[j]}")
answer = "\\n".join(sorted(pairs, key=lambda p: [int(x) for x in p.split(",")]))
print("STATS " + json.dumps({"pairs": len(pairs), "negative": sum(len(v) for v in groups.values())}))
FINAL_VAR("answer")"""


async def solve_pairs(root: Root, question: str) -> tuple[str | None, dict[str, Any]]:
    await root.exec(_PEEK)
    parsed = root.stats(await root.exec(_PAIRS_PARSE))
    retried = await _label_all(root, parsed.get("asked", 0))
    data = await root.exec(_PAIRS_BUILD)
    built = root.stats(data)
    return await root.final(data), {**parsed, "unparsed_first": retried.get("asked_again"), **built}


STRATEGIES = {"niah": solve_niah, "oolong": solve_oolong, "pairs": solve_pairs}
