"""Word (.docx): the body's paragraphs and tables in order. Headings become ``# `` lines (``## ``
for Heading2 ...), list paragraphs ``- `` lines, table rows one line each with cells joined by
`` | ``; tabs and line breaks are kept.

Read by hand with ``zipfile`` and ``ElementTree`` rather than python-docx: the text is a walk over
one XML part (``word/document.xml``), python-docx would add lxml (a 5 MB compiled dependency) and
still need the same walk to keep paragraphs and tables in order, and by hand the part is read
through the same capped stream as every decompression here, so a bomb stops at the cap. A DTD is
refused outright (no entity expansion, ever).
"""

from __future__ import annotations

import io
import re
import zipfile
import xml.etree.ElementTree as ET

from . import Budget, ConversionError, Converted
from .compressed import read_capped

__all__ = ["convert"]

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # compound file: encrypted OOXML, or an old binary .doc
_XML_CAP = 256 << 20
_HEADING = re.compile(r"^(?:heading|Heading)\s*([1-9])$|^Title$")


def _paragraph(p: ET.Element) -> str:
    out = []
    for el in p.iter():
        tag = el.tag
        if tag == _W + "t" and el.text:
            out.append(el.text)
        elif tag == _W + "tab":
            out.append("\t")
        elif tag in (_W + "br", _W + "cr"):
            out.append("\n")
    text = "".join(out)
    props = p.find(_W + "pPr")
    if props is None or not text.strip():
        return text
    style = props.find(_W + "pStyle")
    name = style.get(_W + "val", "") if style is not None else ""
    if match := _HEADING.match(name):
        return "#" * int(match.group(1) or 1) + " " + text
    if props.find(_W + "numPr") is not None or name.lower().startswith("list"):
        return "- " + text
    return text


def _cell(tc: ET.Element) -> str:
    return " ".join(t for t in (_block_text(child) for child in tc) if t).replace("\n", " ")


def _block_text(el: ET.Element) -> str:
    if el.tag == _W + "p":
        return _paragraph(el)
    if el.tag == _W + "tbl":
        rows = [" | ".join(_cell(tc) for tc in tr.iter(_W + "tc")) for tr in el.iter(_W + "tr")]
        return "\n".join(r for r in rows if r.strip(" |"))
    if el.tag == _W + "sdt":  # a content control wraps paragraphs and tables
        content = el.find(_W + "sdtContent")
        return "\n".join(t for t in (_block_text(c) for c in (content if content is not None else [])) if t)
    return ""


def document_text(xml: bytes) -> str:
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise ConversionError("refused: the document's XML declares a DTD")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConversionError(f"broken Word document (XML: {exc})") from exc
    body = root.find(_W + "body")
    if body is None:
        raise ConversionError("not a Word document: no body")
    blocks = [_block_text(el) for el in body]
    return "".join(b + "\n" for b in blocks if b.strip())


def convert(data: bytes, name: str, budget: Budget) -> Converted:
    if data.startswith(_OLE):
        raise ConversionError("encrypted (or an old binary .doc): only unencrypted .docx can be read")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            try:
                info = z.getinfo("word/document.xml")
            except KeyError:
                raise ConversionError("not a Word document: no word/document.xml") from None
            if info.flag_bits & 0x1:
                raise ConversionError("encrypted: the document needs a password")
            with z.open(info) as stream:
                xml = read_capped(stream, min(_XML_CAP, 8 * budget.chars + (1 << 20)), name, info.compress_size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise ConversionError(f"broken Word document ({type(exc).__name__}: {str(exc)[:120]})") from exc
    text = document_text(xml)
    budget.spend(len(text), name)
    return Converted("docx", [("", text)])
