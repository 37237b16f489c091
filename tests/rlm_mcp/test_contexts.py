"""The context store, peek and search."""

from __future__ import annotations

import re
import time

import pytest

from rlm_mcp.contexts import Context, ContextStore, peek, search
from rlm_mcp.errors import InvalidInput, InvalidPattern, InvalidRange, UnknownContext

TEXT = "alpha one\nbeta two\ngamma three\ndelta four\n"


@pytest.fixture
def ctx() -> Context:
    return ContextStore().add("context", TEXT)


# ---------------------------------------------------------------- Context


@pytest.mark.parametrize(
    ("text", "lines"),
    [("", 0), ("x", 1), ("x\n", 1), ("x\ny", 2), ("x\ny\n", 2), ("\n", 1), ("\n\n", 2)],
)
def test_line_count(text, lines):
    """A last line without a newline counts; an empty text has no lines."""
    assert Context("c", text).lines == lines


def test_line_of_and_line_start_are_inverse(ctx):
    for line in range(1, ctx.lines + 1):
        start = ctx.line_start(line)
        assert ctx.line_of(start) == line
        assert start == 0 or ctx.text[start - 1] == "\n"
    assert ctx.line_of(len(TEXT)) == 4
    assert ctx.line_start(ctx.lines + 1) == len(TEXT)


def test_line_of_out_of_range_says_the_valid_range(ctx):
    with pytest.raises(InvalidRange, match=f"0..{len(TEXT)}"):
        ctx.line_of(len(TEXT) + 1)
    with pytest.raises(InvalidRange, match="1..4"):
        ctx.line_start(0)


def test_replacing_text_never_serves_a_stale_line_index():
    c = Context("c", "a\nb\n")
    assert c.lines == 2
    c.text = "a\nb\nc\nd"
    assert c.lines == 4


# ---------------------------------------------------------------- ContextStore


def test_store_add_get_names_drop_clear():
    store = ContextStore()
    store.add("context", "abc", files=["a.txt"], skipped=["b.png"])
    store.add("other", "defg")
    assert store.names() == ["context", "other"]
    assert store.get("context").files == ["a.txt"]
    assert store.get("context").skipped == ["b.png"]
    assert store.total_chars == 7
    store.drop("other")
    assert store.names() == ["context"]
    store.clear()
    assert store.names() == [] and store.total_chars == 0


def test_add_replaces_an_existing_context():
    store = ContextStore()
    store.add("context", "old")
    assert store.add("context", "new").text == "new"


def test_append_concatenates_and_resets_counts():
    store = ContextStore()
    first = store.add("context", "one\n", files=["a"])
    first.tokens, first.token_encoding = 2, "o200k_base"
    assert first.lines == 1
    after = store.add("context", "two\n", files=["b"], append=True)
    assert after.text == "one\ntwo\n"
    assert after.files == ["a", "b"]
    assert after.tokens is None and after.token_encoding is None
    assert after.lines == 2


def test_append_to_a_missing_name_creates_it():
    assert ContextStore().add("new", "x", append=True).text == "x"


def test_unknown_context_lists_the_loaded_names():
    store = ContextStore()
    store.add("docs", "x")
    with pytest.raises(UnknownContext, match="'docs'"):
        store.get("context")
    with pytest.raises(UnknownContext):
        store.drop("context")


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 200, "-lead"])
def test_bad_context_names_are_refused(name):
    with pytest.raises(InvalidInput, match="context name"):
        ContextStore().add(name, "x")


# ---------------------------------------------------------------- peek


def test_peek_chars(ctx):
    out = peek(ctx, 6, 9)
    assert out["text"] == "one"
    assert (out["start"], out["end"], out["unit"], out["total"]) == (6, 9, "chars", len(TEXT))
    assert out["truncated"] is False
    assert peek(ctx)["text"] == TEXT


def test_peek_negative_indices_count_from_the_end(ctx):
    assert peek(ctx, -5)["text"] == "four\n"
    assert peek(ctx, -5, -1)["text"] == "four"
    assert peek(ctx, -1, unit="lines")["text"] == "delta four\n"


def test_peek_end_past_the_data_is_clamped(ctx):
    out = peek(ctx, 0, 10_000)
    assert out["end"] == len(TEXT) and out["text"] == TEXT


def test_peek_lines_are_zero_based_and_end_exclusive(ctx):
    out = peek(ctx, 1, 3, unit="lines")
    assert out["text"] == "beta two\ngamma three\n"
    assert (out["start"], out["end"], out["total"]) == (1, 3, 4)


def test_peek_last_line_without_newline():
    c = Context("c", "a\nb")
    assert peek(c, 1, unit="lines")["text"] == "b"


def test_peek_chars_cap_truncates_and_says_where_to_continue(ctx):
    out = peek(ctx, 0, max_chars=10)
    assert out["text"] == TEXT[:10]
    assert out["truncated"] is True and out["end"] == 10
    follow = peek(ctx, out["end"], max_chars=10)
    assert follow["text"] == TEXT[10:20]


def test_peek_lines_cap_serves_whole_lines_only(ctx):
    out = peek(ctx, 0, unit="lines", max_chars=25)
    assert out["text"] == "alpha one\nbeta two\n"
    assert out["end"] == 2 and out["truncated"] is True
    rest = peek(ctx, out["end"], unit="lines")
    assert out["text"] + rest["text"] == TEXT


def test_peek_a_line_longer_than_the_cap_says_how_to_read_the_rest():
    c = Context("c", "short\n" + "x" * 100 + "\nend\n")
    out = peek(c, 1, unit="lines", max_chars=30)
    assert out["text"] == "x" * 30
    assert out["truncated"] is True
    assert "unit='chars'" in out["hint"]
    assert f"start={6 + 30}" in out["hint"]


@pytest.mark.parametrize(("start", "end"), [(len(TEXT) + 1, None), (-len(TEXT) - 1, None), (10, 5)])
def test_peek_out_of_range_names_the_valid_range(ctx, start, end):
    with pytest.raises(InvalidRange) as info:
        peek(ctx, start, end)
    assert str(len(TEXT)) in str(info.value)


def test_peek_lines_out_of_range(ctx):
    with pytest.raises(InvalidRange, match="4 lines"):
        peek(ctx, 5, unit="lines")


def test_peek_bad_unit_and_cap(ctx):
    with pytest.raises(InvalidInput, match="'chars' or 'lines'"):
        peek(ctx, unit="words")
    with pytest.raises(InvalidInput, match="max_chars"):
        peek(ctx, max_chars=0)
    with pytest.raises(InvalidInput, match="start"):
        peek(ctx, "3")  # type: ignore[arg-type]


def test_peek_empty_context():
    c = Context("c", "")
    assert peek(c)["text"] == ""
    assert peek(c, unit="lines")["text"] == ""


# ---------------------------------------------------------------- search


def test_search_hits_have_offsets_lines_and_windows(ctx):
    out = search(ctx, r"\w+a (\w+)", window=3)
    starts = [m["start"] for m in out["matches"]]
    assert starts == [m.start() for m in re.finditer(r"\w+a (\w+)", TEXT)]
    assert [m["line"] for m in out["matches"]] == [1, 2, 3, 4]
    first = out["matches"][0]
    assert TEXT[first["start"] : first["end"]] == "alpha one"
    assert first["text"] == TEXT[0 : first["end"] + 3]
    assert out["truncated"] is False


def test_search_stops_at_max_results_and_flags_more(ctx):
    out = search(ctx, "a", max_results=2)
    assert len(out["matches"]) == 2
    assert out["truncated"] is True
    exact = search(ctx, r"^\w+", max_results=4)
    assert len(exact["matches"]) == 4 and exact["truncated"] is False


def test_search_caret_matches_at_line_starts(ctx):
    out = search(ctx, r"^gamma")
    assert [m["line"] for m in out["matches"]] == [3]


def test_search_literal_mode_escapes_metacharacters():
    c = Context("c", "cost is $5.00 (approx.)\nor 5x00\n")
    out = search(c, "$5.00 (approx.)", regex=False)
    assert [m["start"] for m in out["matches"]] == [8]
    assert search(c, "5.00", regex=False)["matches"][0]["start"] == 9
    assert len(search(c, "5.00")["matches"]) == 2  # as a regex "." matches any char


def test_search_ignore_case(ctx):
    assert search(ctx, "BETA")["matches"] == []
    assert search(ctx, "BETA", ignore_case=True)["matches"][0]["line"] == 2


def test_search_invalid_regex_quotes_the_re_error(ctx):
    with pytest.raises(InvalidPattern, match="unterminated|missing"):
        search(ctx, "(unclosed")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_results": 0}, {"max_results": 1001}, {"window": -1}, {"window": 5001}, {"pattern": ""}],
)
def test_search_bounds_are_checked(ctx, kwargs):
    args = {"pattern": "a", **kwargs}
    with pytest.raises(InvalidInput):
        search(ctx, **args)


def test_search_line_numbers_agree_with_and_without_index():
    text = "".join(f"line {i} {'needle' if i % 7 == 0 else ''}\n" for i in range(1000))
    c = Context("c", text)
    before = search(c, "needle", max_results=100)
    assert c.lines == 1000  # builds the index
    after = search(c, "needle", max_results=100)
    assert before["matches"] == after["matches"]
    assert [m["line"] for m in after["matches"][:3]] == [1, 8, 15]


def test_search_output_is_capped_by_max_chars():
    c = Context("c", ("word " * 100 + "\n") * 50)
    out = search(c, "word", window=200, max_results=1000, max_chars=2000)
    assert sum(len(m["text"]) for m in out["matches"]) <= 2000
    assert out["truncated"] is True


@pytest.mark.slow
def test_peek_and_search_far_into_a_200mb_context_are_fast():
    """Peeking at offset 150M or by line costs the slice, not the context size."""
    c = Context("big", ("x" * 49 + "\n") * 4_000_000)
    t0 = time.perf_counter()
    out = peek(c, 150_000_000, 150_000_100)
    assert time.perf_counter() - t0 < 0.05
    assert out["text"] == c.text[150_000_000:150_000_100]
    t0 = time.perf_counter()
    assert c.lines == 4_000_000
    assert time.perf_counter() - t0 < 5  # index built once: ~0.5 s here
    t0 = time.perf_counter()
    out = peek(c, 3_000_000, 3_000_002, unit="lines")
    assert time.perf_counter() - t0 < 0.05
    assert out["text"] == ("x" * 49 + "\n") * 2
