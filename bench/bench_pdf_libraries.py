"""pypdfium2 vs pypdf vs pdfminer.six: why ``rlm_mcp/converters/pdf.py`` reads PDFs with PDFium.

Each library extracts the text of every page, in this process, with its plain API
(``PdfTextPage.get_text_bounded``, ``PageObject.extract_text``, ``pdfminer.high_level.extract_text``
split at form feeds); medians of 3 runs (1 with ``--quick``).

Corpus:
a. generated: a 100-page PDF written by hand (``tests/documents.make_pdf``, Helvetica, 40 known
   lines a page): time, pages found, and the share of the known lines found as lines of the right
   page (quality against a ground truth).
b. real: PDFs shipped under /usr/share/doc on Debian (texinfo and DocBook output, real fonts,
   ligatures, headers, tables), when present: time, pages, and how much of each library's words
   the other two find (no ground truth; the Jaccard index of the word sets of two libraries).
c. robustness: an encrypted PDF (a user password) and a truncated one: does the library raise
   (good: the file is skipped with a reason) or return text silently?

Needs ``pip install pypdf pdfminer.six`` beside the project (they are not dependencies); a library
that is not installed is left out, and the report says so.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path

from ._common import Report, fmt_s, median, timed

__all__ = ["run"]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from documents import make_encrypted_pdf, make_pdf  # noqa: E402 - the tests' hand-written PDFs

REAL = [Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"), Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")]
_WORD = re.compile(r"[A-Za-z]{3,}")


def _pdfium(data: bytes) -> list[str]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(data)
    try:
        return [page.get_textpage().get_text_bounded().replace("\r\n", "\n") for page in doc]
    finally:
        doc.close()


def _pypdf(data: bytes) -> list[str]:
    import pypdf

    return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages]


def _pdfminer(data: bytes) -> list[str]:
    from pdfminer.high_level import extract_text

    pages = extract_text(io.BytesIO(data)).split("\f")
    return pages[:-1] if pages and not pages[-1].strip() else pages


LIBRARIES: dict[str, tuple[str, Callable[[bytes], list[str]]]] = {
    "pypdfium2": ("pypdfium2", _pdfium),
    "pypdf": ("pypdf", _pypdf),
    "pdfminer.six": ("pdfminer", _pdfminer),
}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def run(quick: bool = False) -> int:
    report = Report("pdf-libraries", quick, __doc__.split("\n\n")[0])
    report.start()
    libs = {n: fn for n, (mod, fn) in LIBRARIES.items() if importlib.util.find_spec(mod) is not None}
    for name in LIBRARIES.keys() - libs.keys():
        report.note(f"{name} is not installed: left out (pip install pypdf pdfminer.six)")
    report.note("versions: " + ", ".join(f"{n} {_version(n)}" for n in libs))
    runs = 1 if quick else 3

    lines = [[f"Page {p} line {i}: revenue {p * 100 + i} units, region {chr(65 + i % 26)}." for i in range(40)]
             for p in range(1, 101)]
    generated = make_pdf(lines)
    times: dict[str, dict[str, float]] = {n: {} for n in libs}
    for name, fn in libs.items():
        elapsed = []
        for _ in range(runs):
            t, pages = timed(lambda: fn(generated))
            elapsed.append(t)
        found = sum(line in {ln.strip() for ln in page.splitlines()} for page, want in zip(pages, lines) for line in want)
        times[name]["generated"] = median(elapsed)
        report.row(f"a. generated 100 pages: {name}", fmt_s(median(elapsed)),
                   note=f"{len(pages)} pages, {found / 4000:.1%} of the 4,000 known lines on their page")

    for path in (p for p in REAL if p.exists()):
        data = path.read_bytes()
        words: dict[str, set[str]] = {}
        for name, fn in libs.items():
            elapsed = []
            for _ in range(runs):
                t, pages = timed(lambda: fn(data))
                elapsed.append(t)
            words[name] = set(_WORD.findall("\n".join(pages)))
            times[name][path.name] = median(elapsed)
            report.row(f"b. {path.name} ({len(data) // 1024} KiB): {name}", fmt_s(median(elapsed)),
                       note=f"{len(pages)} pages, {sum(map(len, pages)):,} chars")
        names = list(words)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                jaccard = len(words[a] & words[b]) / max(1, len(words[a] | words[b]))
                report.row(f"b. {path.name}: words shared, {a} / {b}", f"{jaccard:.1%}")
    if not any(p.exists() for p in REAL):
        report.note("no PDFs under /usr/share/doc here: part b left out")

    for label, data in (("encrypted", make_encrypted_pdf("secret text")), ("truncated", generated[: len(generated) // 2])):
        for name, fn in libs.items():
            try:
                pages = fn(data)
                outcome = f"no error: {len(pages)} pages, {sum(map(len, pages)):,} chars"
            except Exception as exc:  # noqa: BLE001 - what each library raises is the finding
                outcome = f"raises {type(exc).__name__}"
            report.row(f"c. {label} PDF: {name}", outcome)

    if "pypdfium2" in times:
        for name in times.keys() - {"pypdfium2"}:
            ratios = [times[name][k] / times["pypdfium2"][k] for k in times["pypdfium2"] if k in times[name]]
            report.row(f"time of {name} / pypdfium2", f"{min(ratios):.1f}x to {max(ratios):.1f}x")
    report.note("the choice for rlm_mcp/converters/pdf.py: pypdfium2, the fastest at the same text on every file "
                "here; it raises on encrypted and broken files as the others do, is maintained (PDFium is "
                "Chromium's PDF engine) and ships wheels with PDFium inside for Linux, macOS and Windows")
    report.write()
    return 0
