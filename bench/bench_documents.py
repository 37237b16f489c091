"""Loading documents: what converting costs next to loading the same text as plain files.

Setup: 100 PDF pages written by hand (``tests/documents.make_pdf``, 40 lines of ~60 chars a page),
once as 10 PDFs of 10 pages and once as 100 one-page PDFs; the same text as 10 ``.txt`` files;
and a mixed folder (20 DOCX, 20 HTML pages, 20 notebooks, a zip of 20 text files). The server is
built in this process and driven by the SDK's in-memory ``Client`` (``mode="legacy"``), its
sandbox worker warm (a small load came first). Medians of 5 runs (2 with ``--quick``).

a. ``load_context(path=folder)`` of each folder: median time, and the ratio to the ``.txt`` folder
   (the tool's time includes the exact token count and the hand-over to the sandbox worker).
b. the PDF reader process: the 100 one-page PDFs converted by ``rlm_mcp.converters.pdf`` with the
   pool warm, and with a fresh reader per file (the pool shut down before each), against
   ``pypdfium2`` called in this process: per-file cost of each, and the overhead of the process.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import anyio

from ._common import Report, fmt_s, median, timed

__all__ = ["run"]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from documents import make_docx, make_notebook, make_pdf  # noqa: E402 - the tests' document builders


def _page(p: int) -> list[str]:
    return [f"Page {p} line {i}: revenue {p * 100 + i} units in region {chr(65 + i % 26)}, all audited."
            for i in range(40)]


def _write_corpus(root: Path) -> dict[str, Path]:
    folders = {k: root / k for k in ("pdf-10x10", "pdf-100x1", "txt", "mixed")}
    for f in folders.values():
        f.mkdir()
    for d in range(10):
        pages = [_page(d * 10 + p + 1) for p in range(10)]
        (folders["pdf-10x10"] / f"doc{d:02d}.pdf").write_bytes(make_pdf(pages))
        (folders["txt"] / f"doc{d:02d}.txt").write_text("".join(
            f"--- page {i + 1} ---\n" + "\n".join(lines) + "\n" for i, lines in enumerate(pages)))
    for p in range(100):
        (folders["pdf-100x1"] / f"page{p:03d}.pdf").write_bytes(make_pdf([_page(p + 1)]))
    mixed = folders["mixed"]
    for i in range(20):
        lines = _page(i + 1)
        (mixed / f"memo{i:02d}.docx").write_bytes(make_docx([f"# Memo {i}", *lines[:30], [["k", "v"], ["a", str(i)]]]))
        (mixed / f"page{i:02d}.html").write_text(
            "<html><head><script>var x = 1;</script></head><body><h1>Page</h1>"
            + "".join(f"<p>{ln}</p>" for ln in lines) + "</body></html>")
        (mixed / f"nb{i:02d}.ipynb").write_bytes(make_notebook(
            [("markdown", "\n".join(lines[:10]), None),
             ("code", "print(42)", [{"output_type": "stream", "name": "stdout", "text": "42\n"}])]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(20):
            z.writestr(f"notes/n{i:02d}.txt", "\n".join(_page(i + 1)) + "\n")
    (mixed / "bundle.zip").write_bytes(buf.getvalue())
    return folders


async def _loads(report: Report, folders: dict[str, Path], runs: int) -> None:
    from mcp import Client

    from rlm_mcp.config import Settings
    from rlm_mcp.server import build_server

    server = build_server(Settings(roots=(folders["txt"].parent,)))
    async with Client(server, mode="legacy") as client:

        async def load(path: Path) -> tuple[float, dict]:
            t0 = anyio.current_time()
            result = await client.call_tool("load_context", {"path": str(path), "name": "docs"})
            assert not result.is_error, result.content[0].text
            return anyio.current_time() - t0, result.structured_content or json.loads(result.content[0].text)

        await client.call_tool("load_context", {"text": "warm up", "name": "docs"})
        medians = {}
        for key in ("txt", "pdf-10x10", "pdf-100x1", "mixed"):
            times, summary = [], {}
            for _ in range(runs):
                t, summary = await load(folders[key])
                times.append(t)
            medians[key] = median(times)
            ratio = "" if key == "txt" else f"{medians[key] / medians['txt']:.1f}x the .txt folder"
            report.row(f"a. load_context of {key}/", fmt_s(medians[key]), note=(
                f"{summary['files']} files, {summary['chars']:,} chars; {ratio}".rstrip("; ")))


def _reader(report: Report, folder: Path, runs: int) -> None:
    import pypdfium2 as pdfium

    from rlm_mcp.converters import Budget, pdf

    files = [p.read_bytes() for p in sorted(folder.iterdir())]

    def in_process() -> None:
        for data in files:
            doc = pdfium.PdfDocument(data)
            "".join(page.get_textpage().get_text_bounded() for page in doc)
            doc.close()

    def pooled() -> None:
        for data in files:
            pdf.convert(data, "x.pdf", Budget(1 << 30))

    def fresh() -> None:
        for data in files:
            pdf.shutdown()
            pdf.convert(data, "x.pdf", Budget(1 << 30))

    pooled()  # a reader is up
    n = len(files)
    base = median([timed(in_process)[0] for _ in range(runs)])
    warm = median([timed(pooled)[0] for _ in range(runs)])
    cold = median([timed(fresh)[0] for _ in range(runs)])
    pdf.shutdown()
    report.row("b. one-page PDF, pypdfium2 in this process", fmt_s(base / n), note=f"per file, over {n} files")
    report.row("b. one-page PDF, reader process reused", fmt_s(warm / n),
               note=f"per file; overhead {fmt_s((warm - base) / n)} a file ({warm / base:.1f}x)")
    report.row("b. one-page PDF, a fresh reader per file", fmt_s(cold / n),
               note=f"per file; a reader's start costs {fmt_s((cold - warm) / n)}")


def run(quick: bool = False) -> int:
    report = Report("documents", quick, __doc__.split("\n\n")[0])
    report.start()
    runs = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="rlm-bench-docs-") as tmp:
        folders = _write_corpus(Path(tmp))
        anyio.run(_loads, report, folders, runs)
        _reader(report, folders["pdf-100x1"], runs)
    report.write()
    return 0
