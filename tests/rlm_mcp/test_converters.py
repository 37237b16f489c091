"""Documents as text: HTML, notebooks, compressed files (and, in their own files, PDF, DOCX and
archives), each built at test time, through the loaders and through the real load_context tool."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import pytest
from documents import make_notebook

from rlm_mcp.converters import Budget, find
from rlm_mcp.converters.html import html_to_text
from rlm_mcp.errors import SourceError, TooLarge
from rlm_mcp.loaders import LoadLimits, load_glob, load_path
from support import call, call_raw

PAGE = b"""<!doctype html><html><head><title>The Title</title>
<style>body { color: red }</style><script>var secret = "SCRIPT";</script></head>
<body><h1>Main   heading</h1><p>A <b>bold</b> claim &amp; more.</p>
<ul><li>first</li><li>second<li>third</ul><h3>Sub</h3>
<template><p>TEMPLATE</p></template><noscript>NOSCRIPT</noscript><div hidden>HIDDEN <p>deep</p></div>
<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>
<pre>  keep
    indents</pre>one<br>two<script>document.write("LATE")</script></body></html>"""

NOTEBOOK = make_notebook([
    ("markdown", "# Analysis\nSome prose.", None),
    ("code", "x = 6 * 7\nprint(x)", [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}]),
    ("code", "x", [{"output_type": "execute_result", "execution_count": 2, "metadata": {},
                    "data": {"text/plain": ["42"], "image/png": "iVBORw0KGgo="}}]),
    ("code", "1/0", [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                      "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"]}]),
    ("code", "plot()", [{"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo="}}]),
])


def test_html_keeps_visible_text_with_headings_and_items_on_their_own_lines():
    text = html_to_text(PAGE.decode())
    assert text.splitlines() == [
        "# The Title", "# Main heading", "A bold claim & more.", "- first", "- second", "- third", "### Sub",
        "k | v", "a | 1", "  keep", "    indents", "one", "two",
    ]


def test_html_never_keeps_script_style_template_noscript_or_hidden_text():
    text = html_to_text(PAGE.decode())
    for hidden in ("SCRIPT", "LATE", "color: red", "TEMPLATE", "NOSCRIPT", "HIDDEN", "deep"):
        assert hidden not in text


def test_html_title_repeated_by_the_first_heading_comes_once():
    assert html_to_text("<title>Report</title><h1>Report</h1><p>x</p>") == "# Report\nx\n"


def test_html_honours_the_declared_charset():
    page = '<meta charset="iso-8859-1"><p>café</p>'.encode("latin-1")
    assert html_to_text(page.decode("latin-1")) == "café\n"
    from rlm_mcp.converters.html import convert

    assert convert(page, "p.html", Budget(1000)).parts == [("", "café\n")]


def test_notebook_cells_in_order_with_markers_and_outputs_as_text():
    from rlm_mcp.converters.notebook import convert

    text = convert(NOTEBOOK, "a.ipynb", Budget(10_000)).parts[0][1]
    assert text == (
        "--- cell 1 [markdown] ---\n# Analysis\nSome prose.\n"
        "--- cell 2 [code] ---\nx = 6 * 7\nprint(x)\n--- cell 2 output ---\n42\n"
        "--- cell 3 [code] ---\nx\n--- cell 3 output ---\n42\n"
        "--- cell 4 [code] ---\n1/0\n--- cell 4 output ---\nZeroDivisionError: division by zero\n"
        "ZeroDivisionError: division by zero\n"
        "--- cell 5 [code] ---\nplot()\n--- cell 5 output ---\n[image/png output]\n"
    )


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [("a.PDF", b"", "pdf"), ("x", b"%PDF-1.7", "pdf"), ("b.tar.gz", b"\x1f\x8b", "tar"), ("c.tgz", b"", "tar"),
     ("d.gz", b"", "gzip"), ("noext", b"\x1f\x8b\x08", "gzip"), ("e.docx", b"PK", "docx"), ("f.zip", b"", "zip"),
     ("g.htm", b"", "html"), ("h.ipynb", b"", "notebook"), ("i.log.xz", b"", "xz"), ("j.bz2", b"", "bzip2"), ("k", b"BZh91AY&SY", "bzip2")],
)
def test_formats_are_found_by_suffix_then_magic_bytes(name, head, expected):
    fmt = find(name, head)
    assert fmt is not None and fmt.name == expected


def test_plain_text_and_unknown_zips_are_no_format():
    assert find("notes.txt", b"hello") is None
    assert find("blob", b"PK\x03\x04") is None  # a zip without a known suffix could be anything
    assert find("notes", b"BZh, said the text") is None


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "page.html").write_bytes(PAGE)
    (root / "analysis.ipynb").write_bytes(NOTEBOOK)
    (root / "app.log.gz").write_bytes(gzip.compress(b"GET /gz 200\n"))
    (root / "b.txt.bz2").write_bytes(bz2.compress(b"bzip2 text\n"))
    (root / "c.txt.xz").write_bytes(lzma.compress(b"xz text\n"))
    (root / "page2.html.gz").write_bytes(gzip.compress(b"<p>compressed <script>x</script>page</p>"))
    (root / "plain.md").write_text("plain\n")
    (root / "broken.ipynb").write_text("{not json")
    (root / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (root / "binary.gz").write_bytes(gzip.compress(bytes(range(256)) * 4))
    return root


async def test_a_folder_of_documents_loads_each_as_text_under_its_header(docs):
    src = await load_path(str(docs), LoadLimits(roots=[docs]))
    assert src.files == ["analysis.ipynb", "app.log.gz", "b.txt.bz2", "c.txt.xz", "page.html", "page2.html.gz",
                         "plain.md"]
    assert "==> app.log.gz <==\nGET /gz 200\n==> b.txt.bz2 <==\nbzip2 text\n==> c.txt.xz <==\nxz text\n" in src.text
    assert "==> page2.html.gz <==\ncompressed page\n" in src.text
    assert "==> page.html <==\n# The Title\n# Main heading\n" in src.text and "SCRIPT" not in src.text
    assert "==> analysis.ipynb <==\n--- cell 1 [markdown] ---\n" in src.text
    assert src.converters == {"analysis.ipynb": "notebook", "app.log.gz": "gzip", "b.txt.bz2": "bzip2",
                              "c.txt.xz": "xz", "page.html": "html", "page2.html.gz": "gzip+html"}


async def test_broken_documents_are_skipped_with_their_reason(docs):
    src = await load_path(str(docs), LoadLimits(roots=[docs]))
    reasons = {s["path"]: s["reason"] for s in src.skipped}
    assert set(reasons) == {"broken.ipynb", "broken.gz", "binary.gz"}
    assert "not a valid notebook" in reasons["broken.ipynb"]
    assert "broken gzip data" in reasons["broken.gz"]
    assert reasons["binary.gz"] == "binary (after gzip decompression)"
    assert any("broken.gz (broken gzip data" in w for w in src.warnings)


async def test_a_broken_document_loaded_by_itself_is_an_error_that_says_why(docs):
    with pytest.raises(SourceError, match="not a valid notebook"):
        await load_path("broken.ipynb", LoadLimits(roots=[docs]))


async def test_a_single_document_reads_without_a_header(docs):
    src = await load_path("page2.html.gz", LoadLimits(roots=[docs]))
    assert (src.text, src.files, src.converters) == ("compressed page\n", ["page2.html.gz"],
                                                     {"page2.html.gz": "gzip+html"})


async def test_a_compression_bomb_is_refused_at_the_cap_without_expanding(tmp_path: Path):
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(b"\0" * (64 << 20), compresslevel=9))
    assert (tmp_path / "bomb.gz").stat().st_size < 100_000
    with pytest.raises(TooLarge, match="expands past the load cap") as err:
        await load_path("bomb.gz", LoadLimits(roots=[tmp_path], max_bytes=4 << 20))
    assert "compression bomb" in str(err.value) and "--max-load-mb" in str(err.value)
    with pytest.raises(TooLarge):  # in a folder too: the cap is the load's, not the file's
        await load_glob("*.gz", LoadLimits(roots=[tmp_path], max_bytes=4 << 20))


async def test_converted_text_counts_against_the_load_cap_across_files(tmp_path: Path):
    for i in range(3):  # 3 x 600 KB of text from a few KB on disk each
        (tmp_path / f"part{i}.txt.gz").write_bytes(gzip.compress(b"line of text\n" * 50_000))
    with pytest.raises(TooLarge, match="load cap"):
        await load_path(str(tmp_path), LoadLimits(roots=[tmp_path], max_bytes=1 << 20))
    src = await load_path(str(tmp_path), LoadLimits(roots=[tmp_path], max_bytes=2 << 20))
    assert len(src.files) == 3


async def test_documents_through_the_load_context_tool(make_client, tmp_path: Path, docs):
    async with make_client("legacy") as client:
        summary = await call(client, "load_context", path="docs", name="docs")
        assert summary["files"] == 7
        assert summary["converters"]["page.html"] == "html"
        reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
        assert "broken gzip data" in reasons["broken.gz"] and "not a valid notebook" in reasons["broken.ipynb"]
        seen = await call(client, "exec_python", code=(
            "i = context.index('==> analysis.ipynb <==')\nprint(context[i:i + 71])\n"
            "print('SCRIPT' in context, 'GET /gz 200' in context)"))
        assert seen["stdout"] == "==> analysis.ipynb <==\n--- cell 1 [markdown] ---\n# Analysis\nSome prose.\nFalse True\n"
        is_error, message = await call_raw(client, "load_context", path="docs/broken.gz", name="x")
        assert is_error and "broken gzip data" in message


def test_the_package_exports_what_it_lists_and_every_format_has_a_converter():
    import importlib

    import rlm_mcp.converters as converters

    assert all(hasattr(converters, name) for name in converters.__all__)
    for fmt in converters.FORMATS:
        module = importlib.import_module(f"rlm_mcp.converters.{fmt.module}")
        assert callable(module.convert) and fmt.what, fmt.name


def test_the_converters_import_neither_mcp_nor_the_sandbox():
    import subprocess
    import sys

    code = ("import sys, rlm_mcp.converters as c, importlib\n"
            "[importlib.import_module('rlm_mcp.converters.' + f.module) for f in c.FORMATS]\n"
            "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'sandbox'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"
