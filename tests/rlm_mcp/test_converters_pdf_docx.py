"""PDF (pypdfium2 in a reader process, bounded in time) and Word documents, built at test time:
text and page markers, broken and encrypted files skipped with their reason, the load cap, and the
real load_context tool."""

from __future__ import annotations

import io
import os
import signal
import zipfile
from pathlib import Path

import pytest
from documents import make_docx, make_encrypted_pdf, make_pdf

from rlm_mcp.converters import Budget, ConversionError, convert_file, find, pdf
from rlm_mcp.converters.docx import document_text
from rlm_mcp.errors import SourceError, TooLarge
from rlm_mcp.loaders import LoadLimits, load_path
from support import call, call_raw, children, gone

PAGES = ["Revenue grew (a lot) in 2024.\nSecond line of page one.", "Page two: the risks.", "Café, naïve, 50 €"]


def _convert(name: str, data: bytes, chars: int = 1 << 20):
    fmt = find(name, data[:16])
    assert fmt is not None
    return convert_file(fmt, data, name, Budget(chars))


def _pdf_workers() -> set[int]:
    found = set()
    for pid in children(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"_pdf_worker.py" in f.read():
                    found.add(pid)
        except OSError:
            pass
    return found


def test_pdf_text_comes_page_by_page_each_after_its_marker():
    got = _convert("report.pdf", make_pdf(PAGES))
    assert got.parts == [("", "--- page 1 ---\nRevenue grew (a lot) in 2024.\nSecond line of page one.\n"
                              "--- page 2 ---\nPage two: the risks.\n--- page 3 ---\nCafé, naïve, 50 €\n")]
    assert got.converter == "pdf" and not got.skipped


def test_a_pdf_without_the_suffix_is_found_by_its_magic_bytes():
    assert "--- page 2 ---\nPage two" in _convert("scan-0001", make_pdf(PAGES)).parts[0][1]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(make_encrypted_pdf(), "encrypted: the PDF needs a password"),
     (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF", "broken PDF"),
     (make_pdf(PAGES)[:300], "broken PDF")],
)
def test_broken_and_encrypted_pdfs_are_skipped_with_the_reason(data, reason):
    got = _convert("bad.pdf", data)
    assert got.parts == [] and len(got.skipped) == 1 and got.skipped[0][1].startswith(reason)


def test_a_pdf_that_takes_too_long_is_stopped_at_the_deadline_and_its_reader_killed(monkeypatch):
    big = make_pdf([[f"page {i} line {j} with some words" for j in range(40)] for i in range(300)])
    _convert("warm.pdf", make_pdf(["warm up"]))  # a reader is running and idle
    before = _pdf_workers()
    assert before
    monkeypatch.setattr(pdf, "TIMEOUT", 0.02)
    got = _convert("slow.pdf", big)
    assert got.skipped == [("", "timed out: reading the PDF took more than 0.02 s")]
    assert all(gone(p) for p in before)  # the reader that was busy with it is dead
    monkeypatch.setattr(pdf, "TIMEOUT", 30.0)
    assert _convert("next.pdf", make_pdf(["still works"])).parts[0][1] == "--- page 1 ---\nstill works\n"


def test_a_reader_that_died_while_idle_is_replaced():
    _convert("a.pdf", make_pdf(["one"]))
    for pid in _pdf_workers():
        os.kill(pid, signal.SIGKILL)
    assert _convert("b.pdf", make_pdf(["two"])).parts[0][1] == "--- page 1 ---\ntwo\n"


def test_a_reader_that_does_not_start_in_time_is_killed_and_the_file_skipped(monkeypatch):
    pdf.shutdown()
    monkeypatch.setattr(pdf, "_START", 0.0)
    got = _convert("a.pdf", make_pdf(["one"]))
    assert got.skipped[0][1].startswith("the PDF reader could not start")
    assert not _pdf_workers()  # the reader it spawned was killed and reaped
    monkeypatch.setattr(pdf, "_START", 20.0)
    assert _convert("b.pdf", make_pdf(["two"])).parts[0][1] == "--- page 1 ---\ntwo\n"


def test_idle_readers_are_ended_and_reaped(monkeypatch):
    import time

    pdf.shutdown()
    monkeypatch.setattr(pdf, "IDLE", 0.2)
    _convert("a.pdf", make_pdf(["one"]))
    readers = _pdf_workers()
    assert readers
    deadline = time.monotonic() + 10
    while _pdf_workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pdf_workers()  # children() lists zombies too: these were reaped, not just ended


def test_pdf_text_counts_against_the_load_cap():
    with pytest.raises(TooLarge, match="load cap"):
        _convert("long.pdf", make_pdf([["x" * 80] * 40] * 20), chars=10_000)


def test_docx_paragraphs_headings_and_tables_in_order():
    data = make_docx(["# Contract", "The parties agree <in full> & at once.", [["Item", "Price"], ["Chair", "40"]],
                      "Signed."])
    assert _convert("c.docx", data).parts == [("", "# Contract\nThe parties agree <in full> & at once.\n"
                                                   "Item | Price\nChair | 40\nSigned.\n")]


def test_broken_encrypted_and_bomb_docx_are_refused_with_the_reason(tmp_path: Path):
    assert "broken Word document" in _convert("a.docx", b"PK\x03\x04 truncated").skipped[0][1]
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)  # how Office stores an encrypted .docx
    assert _convert("b.docx", ole).skipped[0][1].startswith("encrypted")
    no_body = tmp_path / "n.docx"
    with zipfile.ZipFile(no_body, "w") as z:
        z.writestr("other.xml", "<x/>")
    assert "no word/document.xml" in _convert("n.docx", no_body.read_bytes()).skipped[0][1]
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"<w:document>" + b" " * (32 << 20) + b"</w:document>")
    assert bomb.stat().st_size < 100_000
    with pytest.raises(TooLarge, match="expands past the load cap"):
        _convert("bomb.docx", bomb.read_bytes(), chars=100_000)


def test_docx_with_a_dtd_is_refused():
    data = make_docx(["x"])
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        xml = z.read("word/document.xml")
    evil = xml.replace(b"?>\n", b'?>\n<!DOCTYPE w [<!ENTITY a "aaaa">]>\n', 1)
    with pytest.raises(ConversionError, match="DTD"):
        document_text(evil)


@pytest.fixture
def office(tmp_path: Path) -> Path:
    root = tmp_path / "office"
    root.mkdir()
    (root / "report.pdf").write_bytes(make_pdf(PAGES))
    (root / "contract.docx").write_bytes(make_docx(["# Contract", [["Item", "Price"], ["Chair", "40"]]]))
    (root / "locked.pdf").write_bytes(make_encrypted_pdf())
    (root / "torn.pdf").write_bytes(make_pdf(PAGES)[:200])
    (root / "notes.txt").write_text("plain notes\n")
    return root


async def test_a_folder_of_pdfs_and_word_files_loads_and_lists_what_it_skipped(office):
    src = await load_path(str(office), LoadLimits(roots=[office]))
    assert src.files == ["contract.docx", "notes.txt", "report.pdf"]
    assert src.text == ("==> contract.docx <==\n# Contract\nItem | Price\nChair | 40\n==> notes.txt <==\nplain notes\n"
                        "==> report.pdf <==\n--- page 1 ---\nRevenue grew (a lot) in 2024.\nSecond line of page one.\n"
                        "--- page 2 ---\nPage two: the risks.\n--- page 3 ---\nCafé, naïve, 50 €\n")
    assert src.converters == {"contract.docx": "docx", "report.pdf": "pdf"}
    reasons = {s["path"]: s["reason"] for s in src.skipped}
    assert reasons["locked.pdf"] == "encrypted: the PDF needs a password"
    assert reasons["torn.pdf"].startswith("broken PDF")


async def test_an_encrypted_pdf_loaded_by_itself_is_an_error_that_says_so(office):
    with pytest.raises(SourceError, match="encrypted"):
        await load_path("locked.pdf", LoadLimits(roots=[office]))


async def test_pdfs_and_word_files_through_the_load_context_tool(make_client, office):
    async with make_client("legacy") as client:
        summary = await call(client, "load_context", path="office")
        assert summary["files"] == 3 and summary["converters"] == {"contract.docx": "docx", "report.pdf": "pdf"}
        assert {"path": "locked.pdf", "reason": "encrypted: the PDF needs a password"} in summary["skipped"]
        pages = await call(client, "exec_python", code=(
            "import re\nstart = context.index('==> report.pdf <==')\n"
            "pages = re.split(r'--- page \\d+ ---\\n', context[start:])[1:]\nprint(len(pages), pages[1].strip())"))
        assert pages["stdout"] == "3 Page two: the risks.\n"
        single = await call(client, "load_context", path="office/report.pdf", name="report")
        assert single["converters"] == {"office/report.pdf": "pdf"} and single["lines"] == 7
        is_error, message = await call_raw(client, "load_context", path="office/torn.pdf", name="torn")
        assert is_error and "broken PDF" in message


async def test_conversion_never_blocks_the_event_loop(tmp_path: Path):
    """A ticker keeps running while a long PDF and a large page convert: the longest pause it sees
    is a small part of the load (blocked, it would be the whole load; free, it is ~0.1 s of ~1 s
    here even on a loaded machine)."""
    import anyio

    (tmp_path / "long.pdf").write_bytes(make_pdf([[f"page {i} line {j} words" for j in range(40)] for i in range(600)]))
    (tmp_path / "big.html").write_text("<p>" + "word " * 200_000 + "</p>" * 2000)
    gaps: list[float] = []

    async def tick(done: anyio.Event) -> None:
        last = anyio.current_time()
        while not done.is_set():
            await anyio.sleep(0.005)
            now = anyio.current_time()
            gaps.append(now - last)
            last = now

    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(tick, done)
        start = anyio.current_time()
        src = await load_path(str(tmp_path), LoadLimits(roots=[tmp_path]))
        elapsed = anyio.current_time() - start
        done.set()
    assert src.converters == {"big.html": "html", "long.pdf": "pdf"}
    assert elapsed > 0.2 and max(gaps) < elapsed / 2, (max(gaps), elapsed)
