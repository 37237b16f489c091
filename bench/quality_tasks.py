"""Deterministic long-context tasks for ``bench quality``, each with its exact score.

Every instance is built from ``(task, target tokens, index)`` alone, so a rerun builds the same
texts, questions and gold answers. Sizes are counted in o200k tokens by the project's own counter
(``rlm_mcp.tokens.get_token_counter``). The gold answer lives only on the ``Instance``; the scripted
root in ``quality_root`` is handed the context (through the MCP server) and the question, never it.

- ``niah`` (S-NIAH): one sentence "The special magic number for <key> is <7 digits>." in filler prose (the
  same haystack for all instances, cut to size), plus ``DISTRACTORS`` such sentences with other keys
  (two of them share a word with the key), all at uniformly drawn positions. Score 1 when
  the answer's first 7-digit number is the key's number, else 0.
- ``oolong`` (OOLONG-like counting): one product review per line; the question asks how many are
  positive. The share of positives is drawn per instance (20-80%), so a fixed guess scores badly.
  Score ``max(0, 1 - |answer - gold| / gold)`` (1 - relative error); OOLONG's own ``0.75 ** |error|``
  and exact hits are reported beside it.
- ``pairs`` (OOLONG-Pairs-like): the same reviews, each naming a product that about four reviews
  share; the question asks for every pair of review numbers about the same product where both
  reviews are negative. Score: F1 of the answered pairs against the gold pairs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Instance", "TASKS", "make_instance", "score"]

DISTRACTORS = 4

_ADJ = ("quiet amber brisk hollow silver crooked gentle rapid frozen golden humble lively narrow "
        "patient rustic scarlet sleepy tidy vivid wooden bitter bright cosmic dusty eager fancy "
        "glossy hasty icy jolly lunar mellow noble olive polar proud royal sandy shiny stormy").split()
_NOUN = ("harbor falcon meadow lantern canyon violin pebble glacier orchard compass thimble beacon "
         "cobweb dolphin ember feather garnet hammock island jigsaw kettle ladder marble nectar "
         "oyster parrot quarry raven saddle tulip umbrella walrus yarn zephyr anchor biscuit").split()

# Filler prose: plain sentences with no digits, no hyphenated words and no "magic", so only the
# planted lines match those patterns.
_SUBJ = ("The old farmer", "A young painter", "The river", "Our neighbour", "The committee", "A tired traveller",
         "The library", "My grandmother", "The orchestra", "A small boat", "The village baker", "The teacher",
         "An engineer", "The wind", "A curious child", "The market", "The museum guide", "A stray cat")
_VERB = ("walked past", "talked about", "looked at", "remembered", "painted", "waited near", "followed",
         "described", "ignored", "repaired", "visited", "admired", "forgot", "discovered", "cleaned")
_OBJ = ("the quiet square", "an empty station", "the northern hills", "a wooden bridge", "the evening train",
        "the crowded harbour", "a forgotten letter", "the stone wall", "the new library", "a bowl of soup",
        "the morning fog", "an old photograph", "the garden gate", "the long corridor", "a broken clock")
_TAIL = ("before the rain started", "after a long day", "without saying a word", "in the early morning",
         "as the bells rang", "while the kettle boiled", "during the festival", "on the way home",
         "with great care", "for no clear reason", "near the end of summer", "as the lights went out")

_BRANDS = ("Vexa Lumo Orbit Zento Kavi Pello Nordi Triq Ambro Solvi Quen Brisa Delto Fenn Gavro Hollis "
           "Ivra Jesso Kolt Larka Mirel Noxa Opal Prax Rilo Santo Tovi Ulmo Varn Wexo").split()
_ITEMS = ("kettle blender toaster lamp backpack headphones mixer heater fan vacuum camera speaker "
          "charger keyboard mouse monitor router printer scooter watch").split()
_POSITIVE = ("I love this {item}, it works perfectly.", "Great {item}, I would happily buy it again.",
             "Excellent quality and it was easy to set up.", "The {item} is fantastic and very reliable.",
             "Best {item} I have ever owned.", "Works great, I am very happy with it.",
             "Wonderful {item}, it exceeded my expectations.", "Really good value, highly recommended.",
             "Superb build and it does exactly what I need.", "Amazing {item}, my whole family loves it.")
_NEGATIVE = ("The {item} broke after two days.", "Terrible {item}, a complete waste of money.",
             "Very disappointed, it stopped working within a week.", "Awful quality, I want a refund.",
             "The worst {item} I have ever bought.", "It arrived damaged and support never answered.",
             "Cheap and flimsy, it fell apart immediately.", "Horrible {item}, do not buy it.",
             "Useless, it never worked properly.", "Poor design and it overheats constantly.")
_ASIDE = ("It arrived on a Monday.", "I bought it for my office.", "It was a gift from my sister.",
          "I have used it for a month.", "Delivery took three days.", "I compared several models first.",
          "", "", "")


@dataclass
class Instance:
    task: str
    target_tokens: int
    index: int
    context: str
    question: str
    gold: Any
    tokens: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _counter():  # noqa: ANN202 - the project's TokenCounter
    from rlm_mcp.tokens import get_token_counter

    return get_token_counter()


def _fit(make_unit, target_tokens: int, rng: random.Random) -> list[str]:
    """Units (lines or sentences) from ``make_unit(rng)`` until their text holds ~``target_tokens``."""
    counter = _counter()
    sample = [make_unit(rng) for _ in range(200)]
    per_unit = max(1.0, counter.count("\n".join(sample)) / len(sample))
    units = sample[: max(1, int(target_tokens / per_unit))]
    units += [make_unit(rng) for _ in range(max(0, int(target_tokens / per_unit) - len(units)))]
    # One correction from the exact count keeps sizes within ~1% of the target.
    total = counter.count("\n".join(units))
    extra = int((target_tokens - total) / per_unit)
    if extra > 0:
        units += [make_unit(rng) for _ in range(extra)]
    elif extra < 0:
        units = units[:extra]
    return units


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJ)} {rng.choice(_VERB)} {rng.choice(_OBJ)} {rng.choice(_TAIL)}."


def _niah(target: int, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
    # One haystack for every instance and size (as RULER reuses its essays): a shorter context is a
    # prefix of a longer one, so only the planted lines differ between the base model's prompts.
    sentences = _fit(_sentence, target, random.Random("niah-haystack"))
    adj, noun = rng.sample(_ADJ, 1)[0], rng.sample(_NOUN, 1)[0]
    key = f"{adj}-{noun}"
    others = {f"{adj}-{rng.choice([n for n in _NOUN if n != noun])}",
              f"{rng.choice([a for a in _ADJ if a != adj])}-{noun}"}
    while len(others) < DISTRACTORS:
        other = f"{rng.choice(_ADJ)}-{rng.choice(_NOUN)}"
        if other != key:
            others.add(other)
    numbers = rng.sample(range(1_000_000, 10_000_000), DISTRACTORS + 1)
    planted = [(key, numbers[0])] + list(zip(sorted(others), numbers[1:]))
    slots = sorted(rng.sample(range(len(sentences) + 1), len(planted)), reverse=True)
    order = list(range(len(planted)))
    rng.shuffle(order)
    depth = 0.0
    for slot, which in zip(slots, order):
        name, number = planted[which]
        sentences.insert(slot, f"The special magic number for {name} is {number}.")
        if which == 0:
            depth = slot / max(1, len(sentences))
    # Paragraphs of ~6 sentences, so the text reads like prose and has lines to peek at.
    text = "\n".join(" ".join(sentences[i:i + 6]) for i in range(0, len(sentences), 6))
    question = f"What is the special magic number for {key} mentioned in the provided text?"
    return text, question, str(numbers[0]), {"depth": round(depth, 3), "key": key}


def _review(rng: random.Random, positive: bool, item: str) -> str:
    pool = _POSITIVE if positive else _NEGATIVE
    text = rng.choice(pool).format(item=item)
    aside = rng.choice(_ASIDE)
    return f"{aside} {text}".strip() if rng.random() < 0.5 else f"{text} {aside}".strip()


def _records(target: int, rng: random.Random, products: bool) -> tuple[list[str], list[dict[str, Any]]]:
    share = rng.uniform(0.2, 0.8)
    catalogue = [f"{b} {i}" for b in _BRANDS for i in _ITEMS]
    rng.shuffle(catalogue)
    meta: list[dict[str, Any]] = []
    # Lines are numbered, so size with representative lines first, then build the real ones.
    probe = random.Random(1)
    sample_lines = [_line(probe, n, probe.random() < 0.5, "Vexa kettle", products) for n in range(200)]
    per_line = _counter().count("\n".join(sample_lines)) / len(sample_lines)
    count = max(8, int(target / per_line))
    names = catalogue[: max(2, count // 4)]
    lines = []
    for n in range(1, count + 1):
        positive = rng.random() < share
        product = rng.choice(names)
        meta.append({"id": n, "positive": positive, "product": product})
        lines.append(_line(rng, n, positive, product, products))
    return lines, meta


def _line(rng: random.Random, n: int, positive: bool, product: str, products: bool) -> str:
    day = f"2024-{1 + rng.randrange(12):02d}-{1 + rng.randrange(28):02d}"
    user = rng.randrange(10_000, 99_999)
    item = product.split()[-1]
    head = f"Review {n} | {day} | user {user}"
    if products:
        head += f" | product: {product}"
    return f"{head} | {_review(rng, positive, item)}"


def _oolong(target: int, rng: random.Random) -> tuple[str, str, int, dict[str, Any]]:
    lines, meta = _records(target, rng, products=False)
    gold = sum(m["positive"] for m in meta)
    question = ("Each line of the text is a product review. How many of the reviews are positive? "
                "Answer with a single number.")
    return "\n".join(lines), question, gold, {"records": len(lines)}


def _pairs(target: int, rng: random.Random) -> tuple[str, str, list[tuple[int, int]], dict[str, Any]]:
    lines, meta = _records(target, rng, products=True)
    negative: dict[str, list[int]] = {}
    for m in meta:
        if not m["positive"]:
            negative.setdefault(m["product"], []).append(m["id"])
    gold = sorted((a, b) for ids in negative.values() for i, a in enumerate(ids) for b in ids[i + 1:])
    question = ("Each line of the text is a product review with a review number and a product. List every "
                "pair of review numbers (a, b) with a < b such that both reviews are about the same product "
                "and both reviews are negative. Answer with one pair per line, written as a,b.")
    return "\n".join(lines), question, gold, {"records": len(lines), "gold_pairs": len(gold)}


_BUILDERS = {"niah": _niah, "oolong": _oolong, "pairs": _pairs}
TASKS = tuple(_BUILDERS)


def make_instance(task: str, target_tokens: int, index: int) -> Instance:
    rng = random.Random(f"{task}/{target_tokens}/{index}")
    context, question, gold, info = _BUILDERS[task](target_tokens, rng)
    inst = Instance(task, target_tokens, index, context, question, gold, info=info)
    inst.tokens = _counter().count(context)
    return inst


# -- scoring -------------------------------------------------------------------------------------

_PAIR = re.compile(r"(\d+)\s*[,;\-]\s*(\d+)")


def score(inst: Instance, answer: str | None) -> dict[str, float]:
    """``{"score": 0..1, ...}``: the task's main score plus the task's secondary figures."""
    answer = answer or ""
    if inst.task == "niah":
        found = re.search(r"(?<!\d)\d{7}(?!\d)", answer)
        return {"score": float(bool(found) and found.group(0) == inst.gold)}
    if inst.task == "oolong":
        found = re.search(r"-?\d+", answer.replace(",", ""))
        if not found:
            return {"score": 0.0, "oolong": 0.0, "exact": 0.0, "abs_error": float(inst.gold)}
        error = abs(int(found.group(0)) - inst.gold)
        return {"score": max(0.0, 1 - error / max(1, inst.gold)), "oolong": 0.75 ** min(error, 1000),
                "exact": float(error == 0), "abs_error": float(error)}
    predicted = {tuple(sorted((int(a), int(b)))) for a, b in _PAIR.findall(answer) if a != b}
    gold = set(inst.gold)
    hit = len(predicted & gold)
    precision = hit / len(predicted) if predicted else 0.0
    recall = hit / len(gold) if gold else float(not predicted)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"score": f1, "precision": precision, "recall": recall}
