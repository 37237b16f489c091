"""HTML as the text a reader sees: no script, style, template or noscript contents, nothing marked
``hidden``; headings (``# ``), list items (``- ``), paragraphs and table rows on their own lines.

The standard library's ``html.parser`` is enough: it is forgiving of broken markup, treats script
and style bodies as raw text, and decodes entities. The title comes first, as a ``# `` line (once, when the first heading
repeats it).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from . import Budget, ConversionError, Converted

__all__ = ["convert", "html_to_text"]

# Elements whose contents are never shown.
_INVISIBLE = frozenset({"script", "style", "template", "noscript", "svg", "math", "object", "iframe", "datalist"})
# Elements that start and end a line of their own.
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "header", "hgroup", "hr", "html", "legend", "li", "main",
    "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
    "h1", "h2", "h3", "h4", "h5", "h6", "title",
})  # fmt: skip
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                   "track", "wbr"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._prefix = ""
        self._skip: list[str] = []  # stack of invisible elements we are inside
        self._pre = 0
        self._cells = 0  # cells already on this table row

    # A line ends at every block boundary; an empty line is never kept.
    def _flush(self) -> None:
        text = "".join(self._line)
        if not self._pre:
            text = _SPACES.sub(" ", text).strip()
        if text.strip():
            self.lines.append(self._prefix + text)
        self._line = []
        self._prefix = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag == self._skip[-1] or tag in _INVISIBLE:
                self._skip.append(tag)
            return
        hidden = any(k == "hidden" or (k == "aria-hidden" and v == "true") for k, v in attrs)
        if tag in _INVISIBLE or (hidden and tag not in _VOID):
            self._skip.append(tag)
            return
        if tag == "br":
            self._flush()
        elif tag in ("td", "th"):
            if self._cells:
                self._line.append(" | ")
            self._cells += 1
        elif tag in _BLOCK:
            self._flush()
            if tag == "tr":
                self._cells = 0
            if tag[0] == "h" and tag[1:].isdigit():
                self._prefix = "#" * int(tag[1]) + " "
            elif tag == "title":
                self._prefix = "# "
            elif tag == "li":
                self._prefix = "- "
            elif tag == "pre":
                self._pre += 1
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._line.append(f" [{alt}] ")

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        if tag in ("td", "th"):
            return
        if tag in _BLOCK:
            self._flush()
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._line.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _decode_html(data: bytes) -> tuple[str, bool]:
    """The page's characters: its BOM or ``<meta charset>``, else UTF-8, else Windows-1252 (what
    browsers assume), with replacements only as a last resort."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec, errors="replace"), False
    declared = _CHARSET.search(data[:4096])
    codecs = [declared.group(1).decode("ascii", "replace")] if declared else []
    for codec in (*codecs, "utf-8", "cp1252"):
        try:
            return data.decode(codec), False
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("utf-8", errors="replace"), True


def html_to_text(markup: str) -> str:
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    lines = parser.lines
    if len(lines) > 1 and lines[0] == lines[1]:  # the title repeated as the first heading
        lines = lines[1:]
    return "\n".join(lines) + ("\n" if lines else "")


def convert(data: bytes, name: str, budget: Budget) -> Converted:
    if b"\0" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConversionError("not HTML: binary data")
    markup, replaced = _decode_html(data)
    text = html_to_text(markup)
    budget.spend(len(text), name)
    return Converted("html", [("", text)], replaced=replaced)
