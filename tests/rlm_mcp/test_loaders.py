"""Loading text, files, folders, globs and URLs, with the roots and caps enforced."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from rlm_mcp.errors import InvalidInput, PathNotAllowed, SourceError, TooLarge, UrlNotAllowed
from rlm_mcp.loaders import LoadLimits, load_glob, load_path, load_text, resolve_path
from rlm_mcp.urls import load_url
from documents import make_pdf

# ---------------------------------------------------------------- a tree of files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with nested text, a binary, a latin-1 file, tool folders and a symlink leading out."""
    root = tmp_path / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.md").write_text("beta")  # no trailing newline
    (root / "sub" / "deeper" / "c.py").write_text("print('c')\n")
    (root / "latin.txt").write_bytes("café crème\n".encode("latin-1"))
    (root / "img.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    (root / "link_out.txt").symlink_to(outside / "secret.txt")
    return root


@pytest.fixture
def limits(tree: Path) -> LoadLimits:
    return LoadLimits(roots=[tree])


async def test_folder_loads_every_text_file_sorted_with_headers(tree, limits):
    src = await load_path(str(tree), limits)
    assert src.files == ["a.txt", "latin.txt", "sub/b.md", "sub/deeper/c.py"]
    assert src.text.startswith("==> a.txt <==\nalpha\n==> latin.txt <==\n")
    assert "==> sub/b.md <==\nbeta\n==> sub/deeper/c.py <==\nprint('c')\n" in src.text


async def test_folder_skips_binary_hidden_and_tool_folders(tree, limits):
    src = await load_path(".", limits)
    assert {"path": "img.bin", "reason": "binary"} in src.skipped
    assert "[core]" not in src.text and "module.exports" not in src.text
    assert any("binary" in w and "img.bin" in w for w in src.warnings)
    assert any("hidden" in w for w in src.warnings)


async def test_folder_symlink_leading_outside_the_root_is_refused(tree, limits):
    src = await load_path(str(tree), limits)
    assert "TOP SECRET" not in src.text
    assert "link_out.txt" in [s["path"] for s in src.skipped]
    assert any("outside the allowed folders" in w and "link_out.txt" in w for w in src.warnings)


async def test_latin1_file_is_decoded_with_replacements_and_named(tree, limits):
    src = await load_path("latin.txt", limits)
    assert src.text == "caf\ufffd cr\ufffdme\n"
    assert src.files == ["latin.txt"]
    assert len(src.warnings) == 1 and "latin.txt" in src.warnings[0]
    folder = await load_path(".", limits)
    assert any("UTF-8" in w and "latin.txt" in w for w in folder.warnings)


async def test_single_file_relative_to_the_first_root(tree, limits):
    src = await load_path("sub/b.md", limits)
    assert (src.text, src.files, src.skipped) == ("beta", ["sub/b.md"], [])


async def test_utf8_bom_is_dropped(tree, limits):
    (tree / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert (await load_path("bom.txt", limits)).text == "hello"


async def test_symlink_to_outside_refused_when_named_directly(tree, limits):
    with pytest.raises(PathNotAllowed, match="--root"):
        await load_path("link_out.txt", limits)


@pytest.mark.parametrize("path", ["../outside/secret.txt", "sub/../../outside/secret.txt", "/etc/passwd"])
async def test_paths_escaping_the_roots_are_refused(tree, limits, path):
    with pytest.raises(PathNotAllowed) as info:
        await load_path(path, limits)
    assert str(tree) in str(info.value) and "--root" in str(info.value)


async def test_missing_path_says_no_such_file(limits):
    with pytest.raises(SourceError, match="No such file") as info:
        await load_path("nope.txt", limits)
    assert not isinstance(info.value, PathNotAllowed)


async def test_a_binary_file_named_directly_is_refused(limits):
    with pytest.raises(SourceError, match="binary"):
        await load_path("img.bin", limits)


async def test_a_second_root_allows_more(tree):
    outside = tree.parent / "outside"
    src = await load_path(str(outside / "secret.txt"), LoadLimits(roots=[tree, outside]))
    assert src.text == "TOP SECRET\n"


def test_resolve_path_collapses_dots_and_follows_symlinks(tree):
    assert resolve_path("sub/../a.txt", [tree]) == (tree / "a.txt").resolve()
    with pytest.raises(PathNotAllowed):
        resolve_path("link_out.txt", [tree])


async def test_file_count_cap(limits):
    limits.max_files = 2
    with pytest.raises(TooLarge, match="--max-files"):
        await load_path(".", limits)


async def test_size_cap_for_folder_and_file(tree, limits):
    limits.max_bytes = 10
    with pytest.raises(TooLarge, match="--max-load-mb"):
        await load_path(".", limits)
    (tree / "big.txt").write_text("x" * 11)
    with pytest.raises(TooLarge):
        await load_path("big.txt", limits)


async def test_folder_progress_is_reported(tree, limits):
    for i in range(150):
        (tree / "many" / f"{i:03}.txt").parent.mkdir(exist_ok=True)
        (tree / "many" / f"{i:03}.txt").write_text(f"file {i}\n")
    calls = []

    async def progress(done, total, message):
        calls.append((done, total, message))

    src = await load_path("many", limits, progress=progress)
    assert len(src.files) == 150
    assert len(calls) >= 2
    assert calls[-1][0] == calls[-1][1]  # all bytes done at the end


async def test_symlinked_folder_is_not_followed(tree, limits):
    (tree / "loop").symlink_to(tree, target_is_directory=True)
    src = await load_path(".", limits)
    assert not any(f.startswith("loop/") for f in src.files)
    assert any("loop" in w for w in src.warnings)


async def test_empty_folder_is_an_error(tree, limits):
    (tree / "empty").mkdir()
    with pytest.raises(SourceError, match="no readable text files"):
        await load_path("empty", limits)


# ---------------------------------------------------------------- globs


async def test_glob_recursive(limits):
    src = await load_glob("**/*.txt", limits)
    assert src.files == ["a.txt", "latin.txt"]
    assert "link_out.txt" in [s["path"] for s in src.skipped]  # matched, but leads outside the root
    src = await load_glob("sub/**/*", limits)
    assert src.files == ["sub/b.md", "sub/deeper/c.py"]
    assert "==> sub/deeper/c.py <==" in src.text


async def test_glob_skips_tool_folders_unless_named(limits):
    with pytest.raises(SourceError, match="name the folder in the pattern"):
        await load_glob("**/*.js", limits)  # the only match is under node_modules
    src = await load_glob("node_modules/**/*.js", limits)
    assert src.files == ["node_modules/pkg/index.js"]


async def test_glob_without_matches_says_so(limits):
    with pytest.raises(SourceError, match="matched no files"):
        await load_glob("**/*.nothing", limits)


@pytest.mark.parametrize("pattern", ["../outside/*.txt", "*/../../outside/*.txt"])
async def test_glob_escaping_the_roots_is_refused(limits, pattern):
    with pytest.raises(PathNotAllowed):
        await load_glob(pattern, limits)


async def test_absolute_glob_inside_a_root(tree, limits):
    src = await load_glob(str(tree / "sub" / "*.md"), limits)
    assert src.files == ["sub/b.md"]


async def test_glob_file_count_cap(limits):
    limits.max_files = 1
    with pytest.raises(TooLarge):
        await load_glob("**/*", limits)


def test_load_text():
    src = load_text("hello")
    assert (src.text, src.files, src.skipped, src.warnings) == ("hello", [], [], [])
    with pytest.raises(InvalidInput):
        load_text(b"bytes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- URLs against a real local server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # body ends when the connection closes: lets us omit Content-Length

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=(), length=True):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        port = self.server.server_address[1]
        plain = [("Content-Type", "text/plain")]
        routes = {
            "/text": lambda: self._send(
                200, b"hello from the server\n", [("Content-Type", "text/plain; charset=utf-8")]
            ),
            "/latin1": lambda: self._send(
                200, "café".encode("latin-1"), [("Content-Type", "text/plain; charset=latin-1")]
            ),
            "/redirect": lambda: self._send(302, headers=[("Location", "/text")]),
            "/loop": lambda: self._send(302, headers=[("Location", "/loop")]),
            "/to-file": lambda: self._send(302, headers=[("Location", "file:///etc/passwd")]),
            "/to-ftp": lambda: self._send(302, headers=[("Location", f"ftp://127.0.0.1:{port}/x")]),
            "/big": lambda: self._send(200, b"x" * 5000, plain),
            "/big-unsized": lambda: self._send(200, b"y" * 5000, plain, length=False),
            "/image": lambda: self._send(200, b"\x89PNG\x00\x00", [("Content-Type", "image/png")]),
            "/page": lambda: self._send(200, _PAGE, [("Content-Type", "text/html; charset=utf-8")]),
            "/report": lambda: self._send(200, _PDF, [("Content-Type", "application/pdf")]),
            "/files/paper.pdf": lambda: self._send(200, _PDF, [("Content-Type", "application/octet-stream")]),
            "/broken": lambda: self._send(200, b"%PDF-1.7 not really", [("Content-Type", "application/pdf")]),
            "/slow": self._slow,
        }
        routes.get(self.path, lambda: self._send(404, b"not found"))()

    def _slow(self):
        time.sleep(1.5)
        self._send(200, b"late")


_PAGE = (b"<html><head><title>Notes</title><script>var hidden = 1;</script><style>p {}</style></head>"
         b"<body><h1>Results</h1><ul><li>first</li><li>second</li></ul><p>Visible text.</p></body></html>")
_PDF = make_pdf(["Page one text.", "Page two text."])


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that stop reading early (caps, timeouts) are expected here


@pytest.fixture(scope="module")
def server():
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def url_limits() -> LoadLimits:
    return LoadLimits(allow_url=True, allow_private_urls=True, url_timeout=5)


async def test_url_loads_text(server, url_limits):
    src = await load_url(f"{server}/text", url_limits)
    assert src.text == "hello from the server\n"
    assert src.files == [f"{server}/text"]


async def test_url_charset_from_the_response(server, url_limits):
    assert (await load_url(f"{server}/latin1", url_limits)).text == "café"


async def test_url_follows_a_redirect(server, url_limits):
    src = await load_url(f"{server}/redirect", url_limits)
    assert src.text == "hello from the server\n"
    assert src.files == [f"{server}/text"]


async def test_url_refused_when_url_loading_is_off(server):
    with pytest.raises(UrlNotAllowed, match="--allow-url"):
        await load_url(f"{server}/text", LoadLimits())


async def test_url_to_loopback_refused_by_default(server):
    with pytest.raises(UrlNotAllowed, match="loopback"):
        await load_url(f"{server}/text", LoadLimits(allow_url=True))


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://0.0.0.0:9/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://224.0.0.1/",
        "http://[2002:7f00:1::]/",
    ],
)
async def test_non_public_addresses_refused(url):
    with pytest.raises(UrlNotAllowed):
        await load_url(url, LoadLimits(allow_url=True, url_timeout=2))


@pytest.mark.parametrize("scheme_url", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
async def test_only_http_and_https(scheme_url, url_limits):
    with pytest.raises(UrlNotAllowed, match="http and https"):
        await load_url(scheme_url, url_limits)


@pytest.mark.parametrize("path", ["/to-file", "/to-ftp"])
async def test_redirect_to_another_scheme_refused(server, url_limits, path):
    with pytest.raises(UrlNotAllowed, match="http and https"):
        await load_url(f"{server}{path}", url_limits)


async def test_too_many_redirects(server, url_limits):
    url_limits.max_redirects = 3
    with pytest.raises(SourceError, match="redirected more than 3 times"):
        await load_url(f"{server}/loop", url_limits)


async def test_each_redirect_hop_is_rechecked():
    """A public URL redirecting to a loopback one is refused at the second hop."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://127.0.0.1:9/admin"})

    with pytest.raises(UrlNotAllowed, match="loopback"):
        await load_url(
            "http://93.184.216.34/start",
            LoadLimits(allow_url=True),
            transport=httpx.MockTransport(handler),
        )
    assert seen == ["http://93.184.216.34/start"]


async def test_connect_time_check_refuses_loopback(server):
    """The default transport re-checks the address when it connects (against DNS rebinding)."""
    from rlm_mcp.urls import _default_transport

    async with httpx.AsyncClient(transport=_default_transport(LoadLimits(allow_url=True))) as client:
        with pytest.raises(UrlNotAllowed, match="loopback"):
            await client.get(f"{server}/text")


async def test_pinned_connection_loads_when_the_address_is_allowed(server, monkeypatch):
    """With the address policy satisfied, the checked IP is dialled and the page loads."""
    import rlm_mcp.urls as urls

    monkeypatch.setattr(urls, "_refused_kind", lambda ip: None)
    port = server.rsplit(":", 1)[1]
    src = await load_url(f"http://localhost:{port}/text", LoadLimits(allow_url=True, url_timeout=5))
    assert src.text == "hello from the server\n"


async def test_declared_body_over_the_cap(server, url_limits):
    url_limits.max_bytes = 1000
    with pytest.raises(TooLarge, match="--max-load-mb"):
        await load_url(f"{server}/big", url_limits)


async def test_streamed_body_over_the_cap(server, url_limits):
    url_limits.max_bytes = 1000
    with pytest.raises(TooLarge):
        await load_url(f"{server}/big-unsized", url_limits)
    url_limits.max_bytes = 10_000
    assert (await load_url(f"{server}/big-unsized", url_limits)).text == "y" * 5000


async def test_http_error_status(server, url_limits):
    with pytest.raises(SourceError, match="404"):
        await load_url(f"{server}/missing", url_limits)


async def test_binary_content_type_refused(server, url_limits):
    with pytest.raises(SourceError, match="image/png"):
        await load_url(f"{server}/image", url_limits)


async def test_timeout_is_a_source_error(server, url_limits):
    url_limits.url_timeout = 0.3
    with pytest.raises(SourceError, match="timed out"):
        await load_url(f"{server}/slow", url_limits)


async def test_connection_refused_is_a_source_error(url_limits):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match="failed") as info:
        await load_url(f"http://127.0.0.1:{port}/", url_limits)
    assert isinstance(info.value.__cause__, httpx.HTTPError)


async def test_url_progress_is_reported(server, url_limits):
    calls = []

    async def progress(done, total, message):
        calls.append((done, total))

    await load_url(f"{server}/big", url_limits, progress=progress)
    # 5000 bytes is below the 1 MiB step: no progress spam for small downloads
    assert calls == [] or calls[-1][0] == 5000


@pytest.mark.parametrize("url", ["http://[zz::1]/", "http:///no-host"])
async def test_invalid_url_is_invalid_input(url_limits, url):
    with pytest.raises(InvalidInput, match="URL"):
        await load_url(url, url_limits)



async def test_url_documents_are_read_as_files_on_disk_are(server, url_limits):
    """A web page gives its visible text; a PDF its pages, whether the server calls it
    application/pdf or only its name says so."""
    page = await load_url(f"{server}/page", url_limits)
    assert "Visible text." in page.text and "Results" in page.text and "second" in page.text
    assert "hidden" not in page.text and "p {}" not in page.text
    assert page.converters == {f"{server}/page": "html"}
    for path in ("/report", "/files/paper.pdf"):
        pdf = await load_url(f"{server}{path}", url_limits)
        assert pdf.text == "--- page 1 ---\nPage one text.\n--- page 2 ---\nPage two text.\n", pdf.text
        assert pdf.converters == {f"{server}{path}": "pdf"}


async def test_a_broken_document_at_a_url_is_an_error_that_says_why(server, url_limits):
    with pytest.raises(SourceError, match="Could not read .* as pdf"):
        await load_url(f"{server}/broken", url_limits)
