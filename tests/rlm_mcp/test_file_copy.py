"""A plain-text file loaded by path is copied by the kernel and checked on the way, never read into
the server: the context must be the file's text exactly, whatever its encoding turns out to be."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_mcp.config import Settings
from rlm_mcp.session import RlmSession

TEXTS = {
    "ascii": "".join(f"line {i} ERROR code={i % 97}\n" for i in range(50_000)),
    "utf8": "".join(f"ligne {i} naïve café 日本語 🤖 {'x' * (i % 300)}\n" for i in range(20_000)) + "no newline at end",
    "one_line": "a" * 3_000_000,
}


def _session(tmp_path: Path) -> RlmSession:
    return RlmSession(Settings(roots=(tmp_path,), exec_timeout=30))


@pytest.mark.parametrize("kind", sorted(TEXTS))
async def test_a_copied_file_is_the_context_exactly(tmp_path: Path, kind: str):
    """Chars, lines, previews, peeks by chars and lines, search line numbers and the worker's
    variable all match the file's text."""
    text = TEXTS[kind]
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8", newline="")
    session = _session(tmp_path)
    try:
        summary = await session.load_context(path="doc.txt")
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        assert (summary["chars"], summary["lines"], summary["warnings"]) == (len(text), len(lines), [])
        assert summary["preview"].startswith(text[:100]) and summary["preview"].endswith(text[-100:])
        middle = len(text) // 2
        assert (await session.peek(start=middle, end=middle + 500))["text"] == text[middle : middle + 500]
        last = "\n".join(lines[-3:]) + ("\n" if text.endswith("\n") else "")
        served = (await session.peek(start=max(0, len(lines) - 3), unit="lines"))["text"]
        assert served and served == last[: len(served)]  # a line over the output cap comes cut
        needle = text[middle : middle + 12]
        first = text.index(needle)
        found = await session.search(needle, regex=False, max_results=1, window=0)
        assert found["matches"][0]["start"] == first
        assert found["matches"][0]["line"] == text.count("\n", 0, first)
        out = await session.exec_python("print(len(context), hash(context) == hash(context[:]), context[-50:])")
        assert out["stdout"] == f"{len(text)} True {text[-50:]}\n"
    finally:
        await session.aclose()


async def test_the_worker_compares_a_copied_ascii_context_like_any_string(tmp_path: Path):
    """The ASCII str built in place equals, hashes and slices like one built by decoding."""
    text = TEXTS["ascii"]
    (tmp_path / "doc.txt").write_text(text)
    session = _session(tmp_path)
    try:
        await session.load_context(path="doc.txt")
        await session.load_context(text=text, name="decoded")
        out = await session.exec_python(
            "a, b = context, contexts['decoded']\n"
            "print(a == b, hash(a) == hash(b), {a: 1}.get(b), a.count('ERROR'), a.split('\\n')[7] == b.split('\\n')[7])")
        assert out["stdout"] == f"True True 1 {text.count('ERROR')} True\n"
    finally:
        await session.aclose()


async def test_a_file_changed_after_loading_leaves_the_context_as_loaded(tmp_path: Path):
    """The context is a copy: writing to the file afterwards changes neither peek nor the worker."""
    path = tmp_path / "doc.txt"
    path.write_text("first version\n" * 1000)
    session = _session(tmp_path)
    try:
        await session.load_context(path="doc.txt")
        with path.open("r+") as f:
            f.write("SECOND")
        assert (await session.peek(start=0, end=13))["text"] == "first version"
        await session.stop_worker()  # the next worker reloads from the copy
        out = await session.exec_python("print(context[:13])")
        assert out["stdout"] == "first version\n"
    finally:
        await session.aclose()


@pytest.mark.parametrize(("raw", "expected", "warned"), [
    (b"caf\xe9 latin-1\n" * 1000, "caf\ufffd latin-1\n" * 1000, True),
    (b"\xef\xbb\xbfwith a BOM\n", "with a BOM\n", False),
    (b"\xff\xfe" + "utf-16 text\n".encode("utf-16-le"), "utf-16 text\n", False),
    (b"ok " * 400_000 + b"\xed\xa0\x80 a surrogate at the end", "ok " * 400_000 + "\ufffd" * 3 + " a surrogate at the end",
     True),
])
async def test_a_file_that_is_not_strict_utf8_is_decoded_as_before(tmp_path: Path, raw: bytes, expected: str,
                                                                   warned: bool):
    """Invalid UTF-8, a BOM or UTF-16 take the decoding path: replacements and warnings as before."""
    (tmp_path / "doc.txt").write_bytes(raw)
    session = _session(tmp_path)
    try:
        summary = await session.load_context(path="doc.txt")
        assert summary["chars"] == len(expected)
        assert bool(summary["warnings"]) is warned
        assert (await session.peek(start=0, end=40))["text"] == expected[:40]
        assert (await session.peek(start=-min(40, len(expected))))["text"] == expected[-40:]
        assert list((tmp_path).iterdir()) == [tmp_path / "doc.txt"]
    finally:
        await session.aclose()


async def test_appending_a_file_extends_the_context(tmp_path: Path):
    """append=True with a path still joins texts (and line numbers) exactly."""
    (tmp_path / "a.txt").write_text("one\ntwo")
    (tmp_path / "b.txt").write_text(" more\nthree\n")
    session = _session(tmp_path)
    try:
        await session.load_context(path="a.txt")
        summary = await session.load_context(path="b.txt", append=True)
        assert (summary["chars"], summary["lines"]) == (len("one\ntwo more\nthree\n"), 3)
        assert (await session.peek(start=1, unit="lines"))["text"] == "two more\nthree\n"
    finally:
        await session.aclose()
