"""The context store, peek and search (over a text in this process; the worker's side of
them is tested through the session and the tools)."""

from __future__ import annotations

import re
import time
from array import array

import pytest

from rlm_mcp import contexts
from rlm_mcp.contexts import Context, ContextStore, StrSource, line_starts
from rlm_mcp.errors import InvalidInput, InvalidPattern, InvalidRange, UnknownContext
from rlm_mcp.shaping import json_chars

TEXT = "alpha one\nbeta two\ngamma three\ndelta four\n"


def make(text: str, name: str = "c") -> Context:
    """A context with its text kept beside it (the server keeps none) for the helpers below."""
    ctx = Context.from_text(name, text)
    ctx.text = text  # type: ignore[attr-defined]
    return ctx


async def peek(ctx, *args, **kwargs):
    return await contexts.peek(ctx, StrSource(ctx.text), *args, **kwargs)


async def search(ctx, *args, **kwargs):
    return await contexts.search(ctx, StrSource(ctx.text), *args, **kwargs)


@pytest.fixture
def ctx() -> Context:
    return make(TEXT, "context")


# ---------------------------------------------------------------- Context


@pytest.mark.parametrize(
    ("text", "lines"),
    [("", 0), ("x", 1), ("x\n", 1), ("x\ny", 2), ("x\ny\n", 2), ("\n", 1), ("\n\n", 2)],
)
def test_line_count(text, lines):
    """A last line without a newline counts; an empty text has no lines."""
    assert Context.from_text("c", text).lines == lines


def test_line_of_and_line_start_are_inverse_and_count_from_0(ctx):
    for line in range(ctx.lines):
        start = ctx.line_start(line)
        assert ctx.line_of(start) == line
        assert start == 0 or ctx.text[start - 1] == "\n"
    assert ctx.line_of(0) == 0 and ctx.line_of(len(TEXT)) == 3
    assert ctx.line_start(ctx.lines) == len(TEXT)


def test_line_of_out_of_range_says_the_valid_range(ctx):
    with pytest.raises(InvalidRange, match=f"0..{len(TEXT)}"):
        ctx.line_of(len(TEXT) + 1)
    with pytest.raises(InvalidRange, match="0..3"):
        ctx.line_start(-1)


PIECES = ["", "a", "\n", "a\n", "\n\n", "ab\ncd", "x\ny\n", "\nlead", "é\n\U0001f600"]


@pytest.mark.parametrize("first", PIECES)
@pytest.mark.parametrize("second", PIECES)
def test_appending_gives_the_index_and_edges_of_the_whole_text(first, second):
    """The server keeps no text, so an append must extend the index exactly as a full rebuild would."""
    old = Context.from_text("c", first, files=["a"])
    old.tokens, old.token_encoding = 3, "o200k_base"
    both = old.appended(second, files=["b"])
    whole = Context.from_text("c", first + second)
    assert list(both.starts) == list(whole.starts) and both.chars == whole.chars
    assert (both.head, both.tail, both.ends_with_newline) == (whole.head, whole.tail, whole.ends_with_newline)
    assert both.files == ["a", "b"]
    assert old.chars == len(first) and old.files == ["a"]  # the old one is left as it was
    if second:
        assert both.tokens is None and both.token_encoding is None


def test_line_offsets_take_4_bytes_until_they_need_8():
    assert line_starts("a\nb").itemsize == 4
    far = line_starts("a\nb", offset=2**32 - 1)
    assert far.itemsize == 8 and list(far) == [2**32 - 1, 2**32 + 1]
    near = Context(name="c", chars=2**32 - 3, starts=array("I", [0, 2**32 - 4]), ends_with_newline=True)
    grown = near.appended("x\ny")
    assert grown.starts.itemsize == 8 and list(grown.starts) == [0, 2**32 - 4, 2**32 - 3, 2**32 - 1]


def test_appending_long_texts_keeps_the_head_and_moves_the_tail():
    a, b = "A" * 5000 + "\n", "B\n" * 3000
    both = Context.from_text("c", a).appended(b)
    assert both.head == (a + b)[:2000] and both.tail == (a + b)[-2000:]
    assert list(both.starts) == list(Context.from_text("c", a + b).starts)


@pytest.mark.parametrize("n", [0, 1, 299, 600, 601, 2000, 2500, 4000, 4001, 10_000])
def test_the_preview_is_the_text_or_its_two_ends(n):
    text = "".join(chr(97 + i % 26) for i in range(n))
    preview = Context.from_text("c", text).preview(300)
    if n <= 600:
        assert preview == text
    else:
        assert preview.startswith(text[:300]) and preview.endswith(text[-300:])
        assert f"{n - 600:,} characters" in preview


# ---------------------------------------------------------------- ContextStore


def test_store_put_get_names_drop_clear():
    store = ContextStore()
    store.put(Context.from_text("context", "abc", files=["a.txt"], skipped=[{"path": "b.png", "reason": "binary"}]))
    store.put(Context.from_text("other", "defg"))
    assert store.names() == ["context", "other"]
    assert store.get("context").files == ["a.txt"]
    assert store.get("context").skipped == [{"path": "b.png", "reason": "binary"}]
    assert store.total_chars == 7
    store.drop("other")
    assert store.names() == ["context"]
    store.clear()
    assert store.names() == [] and store.total_chars == 0


def test_put_replaces_an_existing_context():
    store = ContextStore()
    store.put(Context.from_text("context", "old"))
    store.put(Context.from_text("context", "newer"))
    assert store.get("context").chars == 5 and len(store) == 1


def test_unknown_context_lists_the_loaded_names():
    store = ContextStore()
    store.put(Context.from_text("docs", "x"))
    with pytest.raises(UnknownContext, match="'docs'"):
        store.get("context")
    with pytest.raises(UnknownContext):
        store.drop("context")


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 200, "-lead"])
def test_bad_context_names_are_refused(name):
    with pytest.raises(InvalidInput, match="context name"):
        ContextStore().put(Context.from_text(name, "x"))


# ---------------------------------------------------------------- peek


async def test_peek_chars(ctx):
    out = await peek(ctx, 6, 9)
    assert out["text"] == "one"
    assert (out["start"], out["end"], out["unit"], out["total"]) == (6, 9, "chars", len(TEXT))
    assert out["truncated"] is False
    assert (await peek(ctx))["text"] == TEXT


async def test_peek_negative_indices_count_from_the_end(ctx):
    assert (await peek(ctx, -5))["text"] == "four\n"
    assert (await peek(ctx, -5, -1))["text"] == "four"
    assert (await peek(ctx, -1, unit="lines"))["text"] == "delta four\n"


async def test_peek_end_past_the_data_is_clamped(ctx):
    out = await peek(ctx, 0, 10_000)
    assert out["end"] == len(TEXT) and out["text"] == TEXT


async def test_peek_lines_are_zero_based_and_end_exclusive(ctx):
    out = await peek(ctx, 1, 3, unit="lines")
    assert out["text"] == "beta two\ngamma three\n"
    assert (out["start"], out["end"], out["total"]) == (1, 3, 4)


async def test_peek_last_line_without_newline():
    c = make("a\nb", "c")
    assert (await peek(c, 1, unit="lines"))["text"] == "b"


async def test_peek_chars_cap_truncates_and_says_where_to_continue():
    c = make(TEXT * 50)
    out = await peek(c, 0, max_chars=1000)
    assert json_chars(out) <= 1000
    assert 0 < out["end"] < c.chars and out["text"] == c.text[: out["end"]]
    assert out["truncated"] is True and f"start={out['end']}" in out["hint"]
    follow = await peek(c, out["end"], max_chars=1000)
    assert follow["text"] == c.text[out["end"]: follow["end"]] and follow["end"] > out["end"]


async def test_peek_cap_counts_the_text_as_json_where_escapes_take_more():
    """A newline is two characters in the JSON text a client gets, a control character six."""
    for char, escaped in (("\n", 2), ("\x01", 6)):
        c = make(char * 3000)
        out = await peek(c, 0, max_chars=1000)
        assert json_chars(out) <= 1000
        assert 0 < len(out["text"]) < 1000 // escaped and out["end"] == len(out["text"])


async def test_peek_lines_cap_serves_whole_lines_only():
    c = make(TEXT * 50)
    out = await peek(c, 0, unit="lines", max_chars=1000)
    assert json_chars(out) <= 1000
    assert out["text"] == "".join(c.text.splitlines(keepends=True)[: out["end"]])
    assert 0 < out["end"] < c.lines and out["truncated"] is True
    rest = await peek(c, out["end"], unit="lines")
    assert out["text"] + rest["text"] == c.text


async def test_peek_a_line_longer_than_the_cap_says_how_to_read_the_rest():
    c = make("short\n" + "x" * 3000 + "\nend\n")
    out = await peek(c, 1, unit="lines", max_chars=1000)
    assert json_chars(out) <= 1000
    assert 0 < len(out["text"]) < 1000 and out["text"] == "x" * len(out["text"])
    assert out["truncated"] is True
    assert "unit='chars'" in out["hint"]
    assert f"start={6 + len(out['text'])}" in out["hint"]


@pytest.mark.parametrize(("start", "end"), [(len(TEXT) + 1, None), (-len(TEXT) - 1, None), (10, 5)])
async def test_peek_out_of_range_names_the_valid_range(ctx, start, end):
    with pytest.raises(InvalidRange) as info:
        await peek(ctx, start, end)
    assert str(len(TEXT)) in str(info.value)


async def test_peek_lines_out_of_range(ctx):
    with pytest.raises(InvalidRange, match="4 lines"):
        await peek(ctx, 5, unit="lines")


async def test_peek_bad_unit_and_cap(ctx):
    with pytest.raises(InvalidInput, match="'chars' or 'lines'"):
        await peek(ctx, unit="words")
    with pytest.raises(InvalidInput, match="max_chars"):
        await peek(ctx, max_chars=0)
    with pytest.raises(InvalidInput, match="start"):
        await peek(ctx, "3")  # type: ignore[arg-type]


async def test_peek_empty_context():
    c = make("", "c")
    assert (await peek(c))["text"] == ""
    assert (await peek(c, unit="lines"))["text"] == ""


# ---------------------------------------------------------------- search


async def test_search_hits_have_offsets_lines_and_windows(ctx):
    out = await search(ctx, r"\w+a (\w+)", window=3)
    starts = [m["start"] for m in out["matches"]]
    assert starts == [m.start() for m in re.finditer(r"\w+a (\w+)", TEXT)]
    assert [m["line"] for m in out["matches"]] == [0, 1, 2, 3]
    first = out["matches"][0]
    assert TEXT[first["start"] : first["end"]] == "alpha one"
    assert first["text"] == TEXT[0 : first["end"] + 3]
    assert out["truncated"] is False


async def test_search_stops_at_max_results_and_flags_more(ctx):
    out = await search(ctx, "a", max_results=2)
    assert len(out["matches"]) == 2
    assert out["truncated"] is True
    exact = await search(ctx, r"^\w+", max_results=4)
    assert len(exact["matches"]) == 4 and exact["truncated"] is False


async def test_search_caret_matches_at_line_starts(ctx):
    out = await search(ctx, r"^gamma")
    assert [m["line"] for m in out["matches"]] == [2]


async def test_search_literal_mode_escapes_metacharacters():
    c = make("cost is $5.00 (approx.)\nor 5x00\n", "c")
    out = await search(c, "$5.00 (approx.)", regex=False)
    assert [m["start"] for m in out["matches"]] == [8]
    assert (await search(c, "5.00", regex=False))["matches"][0]["start"] == 9
    assert len((await search(c, "5.00"))["matches"]) == 2  # as a regex "." matches any char


async def test_search_ignore_case(ctx):
    assert (await search(ctx, "BETA"))["matches"] == []
    assert (await search(ctx, "BETA", ignore_case=True))["matches"][0]["line"] == 1


async def test_search_invalid_regex_quotes_the_re_error(ctx):
    with pytest.raises(InvalidPattern, match="unterminated|missing"):
        await search(ctx, "(unclosed")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_results": 0}, {"max_results": 1001}, {"window": -1}, {"window": 5001}, {"pattern": ""}],
)
async def test_search_bounds_are_checked(ctx, kwargs):
    args = {"pattern": "a", **kwargs}
    with pytest.raises(InvalidInput):
        await search(ctx, **args)


async def test_search_line_numbers_are_those_peek_reads_by():
    text = "".join(f"line {i} {'needle' if i % 7 == 0 else ''}\n" for i in range(1000))
    c = make(text)
    out = await search(c, "needle", max_results=200)
    assert [m["line"] for m in out["matches"]] == [text.count("\n", 0, m["start"]) for m in out["matches"]]
    assert [m["line"] for m in out["matches"][:3]] == [0, 7, 14]
    for m in out["matches"][:3]:
        line = (await peek(c, m["line"], m["line"] + 1, "lines"))["text"]
        assert "needle" in line and line.startswith(f"line {m['line']} ")


async def test_search_output_is_capped_by_max_chars():
    c = make(("word " * 100 + "\n") * 50)
    out = await search(c, "word", window=200, max_results=1000, max_chars=2000)
    assert json_chars(out) <= 2000
    assert out["truncated"] is True


@pytest.mark.parametrize(("max_results", "window"), [(1000, 0), (1000, 5000), (20, 5000), (1, 5000)])
async def test_search_json_stays_within_the_output_cap_whatever_the_count_and_window(max_results, window):
    """Issue 13: max_results=1000, window=0 gave 92,000 characters under a 20,000 cap (the keys of many
    small hits); escaped text (newlines, quotes) counts too."""
    c = make('ab "q"\n\t' * 40_000)
    out = await search(c, "ab", max_results=max_results, window=window, max_chars=20_000)
    assert json_chars(out) <= 20_000
    assert out["matches"] and out["truncated"] is True and out["next_start"] > out["matches"][-1]["start"]
    assert "start=" in out["hint"]
    assert "max_results" not in out["hint"] or max_results < contexts.MAX_RESULTS_LIMIT


async def test_search_continues_from_next_start_until_every_match_is_seen():
    text = "".join(f"row {i} {'hit' if i % 3 == 0 else 'miss'}\n" for i in range(3000))
    c = make(text)
    seen, start, calls = [], 0, 0
    while True:
        out = await search(c, r"^row \d+ hit", max_results=1000, window=0, max_chars=5000, start=start)
        seen += [m["start"] for m in out["matches"]]
        calls += 1
        if not out["truncated"]:
            break
        start = out["next_start"]
    assert seen == [m.start() for m in re.finditer(r"(?m)^row \d+ hit", text)] and calls > 1


async def test_search_hint_never_asks_to_raise_a_limit_at_its_maximum():
    c = make("x\n" * 3000)
    at_max = await search(c, "x", max_results=contexts.MAX_RESULTS_LIMIT, window=0, max_chars=10_000_000)
    assert at_max["truncated"] is True and "raise max_results" not in at_max["hint"]
    assert f"start={at_max['next_start']}" in at_max["hint"]
    small = await search(c, "x", max_results=5)
    assert "raise max_results (now 5" in small["hint"]


@pytest.mark.parametrize("start", [-1, 10**9, "0", True])
async def test_search_start_outside_the_context_is_refused(ctx, start):
    with pytest.raises(InvalidInput, match="start must be a char offset"):
        await search(ctx, "a", start=start)


async def test_search_one_hit_longer_than_the_cap_comes_back_cut():
    c = make("\n" * 30_000 + "needle")
    out = await search(c, r"\n+needle", window=0, max_chars=2000)
    assert json_chars(out) <= 2000 and out["matches"][0]["text_truncated"] is True


@pytest.mark.slow
async def test_peek_and_search_far_into_a_200mb_context_are_fast():
    """Peeking at offset 150M or by line costs the slice, not the context size."""
    t0 = time.perf_counter()
    c = make(("x" * 49 + "\n") * 4_000_000, "big")
    assert c.lines == 4_000_000
    assert time.perf_counter() - t0 < 5  # the index is built once, at load: ~0.5 s here
    t0 = time.perf_counter()
    out = await peek(c, 150_000_000, 150_000_100)
    assert time.perf_counter() - t0 < 0.05
    assert out["text"] == c.text[150_000_000:150_000_100]
    t0 = time.perf_counter()
    out = await peek(c, 3_000_000, 3_000_002, unit="lines")
    assert time.perf_counter() - t0 < 0.05
    assert out["text"] == ("x" * 49 + "\n") * 2
