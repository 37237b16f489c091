"""Small documents of every kind the loaders convert, built at test time (and by ``python -m bench
documents``): PDFs written by hand, DOCX as a zip of minimal XML, notebooks as JSON.

Nothing here uses the libraries under test, so a test compares a converter against what was written.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from xml.sax.saxutils import escape

__all__ = ["make_docx", "make_encrypted_pdf", "make_notebook", "make_pdf"]


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(pages: list[list[str]] | list[str], encrypt: bytes = b"") -> bytes:
    """A valid PDF with one page per item, each line of text in 12 pt Helvetica from the top.
    ``encrypt`` is an extra trailer entry (see ``make_encrypted_pdf``)."""
    pages = [p.splitlines() if isinstance(p, str) else p for p in pages]
    objects: list[bytes] = []  # object i+1

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below, once the page tree's number is known
    tree = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    for lines in pages:
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 760 Td"]
        for line in lines:
            ops += [f"{_pdf_string(line)} Tj", "T*"]
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        content = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (tree, content, font)))
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % tree
    objects[tree - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (i, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R %s>>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, catalog, encrypt, xref))
    return out.getvalue()


def make_encrypted_pdf(text: str = "secret") -> bytes:
    """A PDF under the standard security handler whose user password is not empty (the /U entry
    matches no password we know), so it cannot be opened without one."""
    o, u, doc_id = os.urandom(32).hex().encode(), os.urandom(32).hex().encode(), os.urandom(16).hex().encode()
    return make_pdf([text], encrypt=b"/Encrypt << /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -44 >> "
                    b"/ID [<%s> <%s>] " % (o, u, doc_id, doc_id))


_DOCX_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml"
 ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
</Types>"""
_DOCX_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Target="word/document.xml"
 Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/>
</Relationships>"""


def make_docx(blocks: list[str | list[list[str]]]) -> bytes:
    """A minimal Word document: each string a paragraph (``# `` starts a Heading1 paragraph),
    each list of rows a table."""
    body = []
    for block in blocks:
        if isinstance(block, str):
            style = '<w:pPr><w:pStyle w:val="Heading1"/></w:pPr>' if block.startswith("# ") else ""
            text = block[2:] if style else block
            body.append(f'<w:p>{style}<w:r><w:t xml:space="preserve">{escape(text)}</w:t></w:r></w:p>')
        else:
            rows = "".join(
                "<w:tr>" + "".join(f"<w:tc><w:p><w:r><w:t>{escape(c)}</w:t></w:r></w:p></w:tc>" for c in row)
                + "</w:tr>" for row in block
            )
            body.append(f"<w:tbl>{rows}</w:tbl>")
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                f'<w:body>{"".join(body)}</w:body></w:document>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _DOCX_TYPES)
        z.writestr("_rels/.rels", _DOCX_RELS)
        z.writestr("word/document.xml", document)
    return out.getvalue()


def make_notebook(cells: list[tuple[str, str, list[dict] | None]]) -> bytes:
    """An nbformat 4 notebook of ``(cell_type, source, outputs)``."""
    nb = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
        "cells": [
            {"cell_type": kind, "metadata": {}, "source": source.splitlines(keepends=True),
             **({"outputs": outputs or [], "execution_count": 1} if kind == "code" else {})}
            for kind, source, outputs in cells
        ],
    }
    return json.dumps(nb, indent=1).encode()
