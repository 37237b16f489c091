"""The PDF reader's process: reads PDFs from stdin, writes their text to stdout, one at a time.

Run as ``python -I _pdf_worker.py`` by ``pdf.py``; it imports nothing of rlm_mcp. PDFium is C++
fed with untrusted bytes: in its own process a crash, a runaway or a memory blow-up costs this
process only, and the parent can kill it at a deadline, which it could not do to a thread.

Frames: a request is a JSON line ``{"size": n, "max_chars": c}`` and ``n`` bytes of PDF; a reply
is a JSON line ``{"ok": true, "pages": k, "size": m}`` and ``m`` bytes of UTF-8 text, or
``{"ok": false, "reason": "..."}``, or ``{"ok": false, "too_large": true}``. ``READY`` first.
The process ends on EOF, or after ``IDLE`` seconds without a request (the parent ends idle
readers sooner; this is for a parent that stopped without closing the pipe).
"""

import json
import os
import resource
import select
import sys

IDLE = 300.0
MEMORY = 3 << 30  # address space: a hostile PDF fails with MemoryError instead of taking the machine


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "password" in text.lower():
        return "encrypted: the PDF needs a password"
    if "format" in text.lower() or "Failed to load" in text:
        return f"broken PDF ({text})"
    return f"PDF reader failed ({type(exc).__name__}: {text})"


def _convert(data: bytes, max_chars: int) -> dict:
    try:
        import pypdfium2 as pdfium
    except ImportError:  # a platform without its wheel, or a broken install
        return {"ok": False, "reason": "cannot read PDFs here: pypdfium2 is not installed (pip install pypdfium2)"}

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        return {"ok": False, "reason": _reason(exc)}
    parts, size = [], 0
    try:
        for i in range(len(doc)):
            page = doc[i]
            textpage = page.get_textpage()
            text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n")
            textpage.close()
            page.close()
            part = f"--- page {i + 1} ---\n{text}" + ("" if text.endswith("\n") or not text else "\n")
            size += len(part)
            if size > max_chars:
                return {"ok": False, "too_large": True}
            parts.append(part)
        return {"ok": True, "pages": len(doc), "text": "".join(parts)}
    except (pdfium.PdfiumError, MemoryError) as exc:
        return {"ok": False, "reason": _reason(exc)}
    finally:
        doc.close()


def _read_exactly(stream, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def main() -> int:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    except (ValueError, OSError):
        pass
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - a stray print must not corrupt the frames
    stdout.write(b"READY\n")
    stdout.flush()
    while True:
        ready, _, _ = select.select([stdin], [], [], IDLE)
        if not ready:
            return 0
        line = stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        try:
            data = _read_exactly(stdin, request["size"])
        except EOFError:
            return 0
        try:
            reply = _convert(data, request["max_chars"])
        except MemoryError:
            reply = {"ok": False, "reason": "PDF reader ran out of memory"}
        text = reply.pop("text", "").encode("utf-8", "surrogatepass")
        if reply.get("ok"):
            reply["size"] = len(text)
        stdout.write(json.dumps(reply).encode() + b"\n" + text)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
