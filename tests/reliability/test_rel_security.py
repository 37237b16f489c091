"""Security at the edges: what the HTTP transport accepts, what the sandbox can see, which files and
URLs a load may reach, and how big a sub-query may be.

Every connection stays on 127.0.0.1 (URLs that name other addresses are either refused before any
connection, which is what is being tested, or answered by an in-process MockTransport).
"""

from __future__ import annotations

import http.server
import os
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from support import FakeOpenAI, call, call_raw, http_server, serve_fake_openai, worker_pid
from rlm_mcp.errors import UrlNotAllowed
from rlm_mcp.loaders import LoadLimits
from rlm_mcp.urls import _refused_kind, load_url

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# -- the HTTP transport ----------------------------------------------------------------------------


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            address, hex_port = parts[1].split(":")
            if parts[3] == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.append(address)
    return found


def test_http_binds_loopback_only_by_default():
    with http_server() as server:
        addresses = _listening(server.port)
        assert addresses, "nothing listens on the server's port"
        # 0100007F is 127.0.0.1; 0.0.0.0 would be 00000000, :: all zeros.
        assert set(addresses) == {"0100007F"}, addresses


@pytest.mark.parametrize(("header", "value"), [
    ("Host", "evil.example"),
    ("Host", "evil.example:80"),
    ("Host", "127.0.0.1.evil.example:80"),
    ("Host", "localhost.evil.example:8000"),
    ("Host", ""),
    ("Origin", "http://evil.example"),
    ("Origin", "http://127.0.0.1.evil.example:80"),
    ("Origin", "https://localhost.evil.example"),
    ("Origin", "null"),
    ("Origin", "file://"),
])
def test_http_rejects_foreign_host_and_origin_even_with_the_token(header, value, shared_auth_server):
    server, token = shared_auth_server
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}", header: value}
    response = httpx.post(server.url, json=INIT, headers=headers, trust_env=False)
    assert response.status_code in (400, 403, 421), (response.status_code, response.text)
    assert "mcp-session-id" not in response.headers


@pytest.fixture(scope="module")
def shared_auth_server() -> Iterator[tuple]:
    token = "tok-" + os.urandom(12).hex()
    with http_server(env={"RLM_AUTH_TOKEN": token}) as server:
        yield server, token


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer wrong", "Basic dXNlcjpwYXNz", "TOKEN", "Bearer TOKENx", "Bearer xTOKEN",
    "Bearer TOKEN TOKEN", "TOKEN Bearer",
])
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_http_auth_token_is_required_on_every_request(shared_auth_server, authorization, method):
    server, token = shared_auth_server
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization.replace("TOKEN", token)
    response = httpx.request(method, server.url, json=INIT if method == "POST" else None, headers=headers,
                             trust_env=False)
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers.get("www-authenticate") == "Bearer"
    assert token not in response.text


async def test_http_auth_token_lets_the_sdk_client_in(shared_auth_server):
    server, token = shared_auth_server
    http_client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http_client, Client(streamable_http_client(server.url, http_client=http_client),
                                   mode="legacy") as client:
        await call(client, "load_context", text="authorised")
        run = await call(client, "exec_python", code="FINAL(context.upper())")
        assert run["final"] == "AUTHORISED"
    # Without the header the same client cannot even initialise.
    with pytest.raises(Exception):  # noqa: B017 - the SDK's own error for a 401
        with anyio.fail_after(20):
            async with Client(server.url, mode="legacy") as client:
                await client.call_tool("rlm_status", {})


async def test_http_auth_token_flag_works_like_the_variable():
    token = "flag-" + os.urandom(8).hex()
    with http_server("--auth-token", token) as server:
        assert httpx.post(server.url, json=INIT, headers=MCP_HEADERS, trust_env=False).status_code == 401
        ok = httpx.post(server.url, json=INIT, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"},
                        trust_env=False)
        assert ok.status_code == 200


# -- nothing of the server's environment reaches sandboxed code ------------------------------------

ESCAPE_ATTEMPTS = [
    "import os\nprint(os.environ)",
    "print(open('/proc/self/environ').read())",
    "print(__import__('os').environ)",
    "import sys\nprint(sys.modules['os'].environ)",
    "print(getattr(json, 'codecs'))",
    "import json\nprint([getattr(json, n) for n in dir(json)])",
    "import re\nprint(re.compile('x').__class__)",
    "print(SHOW_VARS())\nprint(sorted(contexts))",
    "print(globals())",
    "print(vars())",
    "print(dir())",
    "import subprocess",
    "import io\nprint(io.open('/proc/self/environ').read())",
    "import io\nprint(io.FileIO('/proc/1/environ').read())",
    "import csv\nprint(csv.reader(open('/proc/self/environ')))",
    "print(type(print).__module__)",
    "import string\nprint(string.Formatter().get_field('0.__class__', [1], {}))",
    "import pprint\npprint.pprint(dir(pprint))",
    "f = (lambda: 0)\nprint(f.__globals__)",
    "g = (x for x in [1])\nprint(g.gi_frame.f_globals)",
]


def _secret_env(pid: int) -> str:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read().decode(errors="replace")


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode(errors="replace")


async def _probe_for(client: Client, secrets: list[str]) -> int:
    await call(client, "load_context", text="harmless")
    pid = await worker_pid(client)
    for secret in secrets:
        assert secret not in _secret_env(pid), "the worker inherited a secret variable"
        assert secret not in _cmdline(pid)
    for code in ESCAPE_ATTEMPTS:
        is_error, value = await call_raw(client, "exec_python", code=code)
        seen = str(value)
        for secret in secrets:
            assert secret not in seen, f"{code!r} revealed a secret: {seen[:500]}"
    return pid


async def test_no_server_environment_variable_is_visible_to_sandboxed_code_in_memory(make_client, monkeypatch):
    secret = "in-memory-secret-" + os.urandom(8).hex()
    monkeypatch.setenv("RLM_TEST_SECRET", secret)
    monkeypatch.setenv("OPENAI_API_KEY", secret + "-openai")
    async with make_client() as client:
        pid = await _probe_for(client, [secret])
        names = {e.split("=", 1)[0] for e in _secret_env(pid).split("\0") if e}
        assert names <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TMPDIR", "PWD"}, names


async def test_no_server_environment_variable_is_visible_to_sandboxed_code_over_http():
    secret = "http-secret-" + os.urandom(8).hex()
    key = "sk-" + os.urandom(8).hex()
    with http_server("--llm-base-url", "http://127.0.0.1:9/v1",
                     env={"RLM_TEST_SECRET": secret, "RLM_LLM_API_KEY": key}) as server:
        assert secret in _secret_env(server.pid)  # the server itself has them
        async with Client(server.url, mode="legacy") as client:
            await _probe_for(client, [secret, key])
            status = await call(client, "rlm_status")
            assert key not in str(status), "rlm_status shows the API key"


# -- paths and globs stay inside the allowed roots ------------------------------------------------

OUTSIDE_SECRET = "OUTSIDE-THE-ROOT-" + os.urandom(6).hex()


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "readme.md").write_text("inside the root\n")
    (root / "docs" / "sub" / "deep.txt").write_text("deep inside\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE_SECRET + "\n")
    (root / "file_link.txt").symlink_to(outside / "secret.txt")
    (root / "dir_link").symlink_to(outside)
    (root / "docs" / "sub" / "up_link").symlink_to(root.parent)
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    return root


@pytest.mark.parametrize("source", [
    {"path": "../outside/secret.txt"},
    {"path": "OUTSIDE_ABS"},
    {"path": "file_link.txt"},
    {"path": "dir_link/secret.txt"},
    {"path": "dir_link"},
    {"path": "docs/../../outside/secret.txt"},
    {"path": "docs/sub/up_link/outside/secret.txt"},
    {"path": "/etc/passwd"},
    {"path": "/proc/self/environ"},
    {"path": "~"},
    {"path": "loop_a"},
    {"glob": "../outside/*"},
    {"glob": "OUTSIDE_ABS_DIR/*"},
    {"glob": "dir_link/*"},
    {"glob": "**/secret.txt"},
    {"glob": "docs/../../outside/**"},
    {"glob": "docs/sub/up_link/outside/*"},
    {"glob": "/etc/*"},
    {"glob": "file_link.txt"},
])
async def test_paths_and_globs_cannot_leave_the_allowed_roots(make_client, jail, source):
    outside = jail.parent / "outside"
    key, value = next(iter(source.items()))
    value = value.replace("OUTSIDE_ABS_DIR", str(outside)).replace("OUTSIDE_ABS", str(outside / "secret.txt"))
    async with make_client(roots=(jail,)) as client:
        is_error, result = await call_raw(client, "load_context", **{key: value})
        assert OUTSIDE_SECRET not in str(result)
        if not is_error:  # some matches inside, the rest skipped: nothing from outside was loaded
            run = await call(client, "exec_python", code="FINAL(context)")
            assert OUTSIDE_SECRET not in run["final"]
        else:
            assert result.strip() and "Traceback" not in result


async def test_a_folder_load_skips_links_that_lead_out(make_client, jail):
    async with make_client(roots=(jail,)) as client:
        summary = await call(client, "load_context", path=".")
        assert "docs/readme.md" in summary["paths"] and "docs/sub/deep.txt" in summary["paths"]
        assert "file_link.txt" in [s["path"] for s in summary["skipped"]]
        assert any("dir_link" in w for w in summary["warnings"])
        run = await call(client, "exec_python", code="FINAL(context)")
        assert OUTSIDE_SECRET not in run["final"] and "deep inside" in run["final"]
        summary = await call(client, "load_context", glob="**/*", name="all")
        run = await call(client, "exec_python", code="FINAL(contexts['all'])")
        assert OUTSIDE_SECRET not in run["final"]


# -- URLs -----------------------------------------------------------------------------------------


class _Counting(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    accepted = 0
    streamed = 0

    def get_request(self):  # noqa: ANN201 - counts every TCP connection, request or not
        conn = super().get_request()
        type(self).accepted += 1
        return conn


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.path
        if path.startswith("/redirect/"):
            target = path[len("/redirect/"):]
            self.send_response(302)
            self.send_header("Location", target if "://" in target else "/" + target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
            try:
                self.wfile.write(b"x" * 1024)
            except OSError:
                pass
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"y" * 65536
            try:
                for _ in range(50 * 16):  # 50 MiB offered
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    type(self.server).streamed += len(chunk)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up: what the size cap should make it do
        else:
            body = f"served {path}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@contextmanager
def _local_site() -> Iterator[tuple[type[_Counting], int]]:
    class Server(_Counting):
        accepted = 0
        streamed = 0

    server = Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def test_url_loading_is_off_unless_allowed(make_client):
    with _local_site() as (site, port):
        async with make_client() as client:
            is_error, text = await call_raw(client, "load_context", url=f"http://127.0.0.1:{port}/x")
            assert is_error and "--allow-url" in text
        assert site.accepted == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.1", "2130706433", "0x7f000001",
                                  "0.0.0.0", "[::ffff:127.0.0.1]", "127.0.0.2", "[::]"])
async def test_private_and_loopback_urls_are_refused_before_any_connection(make_client, host):
    with _local_site() as (site, port):
        async with make_client(allow_url=True) as client:
            is_error, text = await call_raw(client, "load_context", url=f"http://{host}:{port}/secret")
            assert is_error, text
            assert "--allow-private-urls" in text or "Invalid URL" in text or "resolve" in text, text
        assert site.accepted == 0, f"{host}: the server was contacted"


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                                     "fd00::1", "fe80::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::",
                                     "224.0.0.1", "240.0.0.1", "255.255.255.255"])
def test_private_ranges_are_classified_as_refused(address):
    import ipaddress

    assert _refused_kind(ipaddress.ip_address(address)) is not None


async def test_a_redirect_from_a_public_address_to_loopback_is_refused():
    """The first hop is public (answered by a MockTransport, nothing leaves this process); the redirect
    to 127.0.0.1 must be checked again and refused before connecting."""
    with _local_site() as (site, port):
        hops: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            hops.append(str(request.url))
            if request.url.host == "93.184.216.34":
                return httpx.Response(302, headers={"Location": f"http://127.0.0.1:{port}/secret"})
            return httpx.Response(200, text="should never be fetched")

        limits = LoadLimits(allow_url=True, allow_private_urls=False)
        with pytest.raises(UrlNotAllowed, match="loopback"):
            await load_url("http://93.184.216.34/start", limits, transport=httpx.MockTransport(handler))
        assert hops == ["http://93.184.216.34/start"]
        for target in ("file:///etc/passwd", "gopher://127.0.0.1/", "http://[::1]/x", "http://169.254.169.254/"):
            def to(request: httpx.Request, target: str = target) -> httpx.Response:
                return httpx.Response(301, headers={"Location": target})

            with pytest.raises(UrlNotAllowed):
                await load_url("http://93.184.216.34/start", limits, transport=httpx.MockTransport(to))
        assert site.accepted == 0


async def test_redirects_are_followed_and_capped_when_private_urls_are_allowed(make_client):
    with _local_site() as (site, port):
        async with make_client(allow_url=True, allow_private_urls=True) as client:
            summary = await call(client, "load_context", url=f"http://127.0.0.1:{port}/redirect/final")
            assert summary["preview"] == "served /final"
            is_error, text = await call_raw(client, "load_context", url=f"http://127.0.0.1:{port}/loop")
            assert is_error and "redirected more than" in text
            is_error, text = await call_raw(client, "load_context",
                                            url=f"http://127.0.0.1:{port}/redirect/file:///etc/passwd")
            assert is_error and "http and https" in text


async def test_url_bodies_are_streamed_with_a_size_cap(make_client):
    with _local_site() as (site, port):
        async with make_client(allow_url=True, allow_private_urls=True, max_load_mb=1) as client:
            is_error, text = await call_raw(client, "load_context", url=f"http://127.0.0.1:{port}/big-declared")
            assert is_error and "load cap" in text
            is_error, text = await call_raw(client, "load_context", url=f"http://127.0.0.1:{port}/big-chunked")
            assert is_error and "--max-load-mb" in text
            status = await call(client, "rlm_status")
            assert status["contexts"] == []
        # The client stopped reading soon after the cap: far less than the 50 MiB offered was sent.
        assert site.streamed < 20 * 1024 * 1024, site.streamed


async def test_load_errors_cannot_be_used_to_probe_local_files_outside_the_roots(make_client, jail):
    """An existing and a missing file outside the roots give the same refusal."""
    async with make_client(roots=(jail,)) as client:
        _, exists = await call_raw(client, "load_context", path=str(jail.parent / "outside" / "secret.txt"))
        _, missing = await call_raw(client, "load_context", path=str(jail.parent / "outside" / "nope.txt"))
        assert "outside the allowed folders" in exists and "outside the allowed folders" in missing


# -- sub-query sizes ------------------------------------------------------------------------------


async def test_sub_query_prompts_and_answers_are_capped_with_a_provider(make_client):
    with serve_fake_openai(FakeOpenAI()) as fake:
        async with make_client(sub_llm="provider", llm_base_url=fake.url, max_prompt_chars=1000) as client:
            run = await call(client, "exec_python", code="a = llm_query('x' * 2000)")
            assert run["status"] == "error" and "over the 1,000 cap" in run["error"]
            run = await call(client, "exec_python",
                             code="rs = llm_query_batched(['short', 'y' * 5000, 'also short'])\nFINAL(str(rs))")
            assert run["status"] == "ok"
            assert "ANSWER[short]" in run["final"] and "ANSWER[also short]" in run["final"]
            assert "over the 1,000 cap" in run["final"]
            is_error, text = await call_raw(client, "sub_query", prompt="z" * 1500)
            assert is_error and "--max-prompt-chars" in text
            await call(client, "load_context", text="w" * 5000)
            is_error, text = await call_raw(client, "sub_query", prompt="summarise", name="context", start=0, end=4000)
            assert is_error and "--max-prompt-chars" in text
            assert all(len(m["content"]) <= 1000 for r in fake.requests for m in r["messages"] if m["role"] == "user")
            assert len(fake.requests) == 2  # only the two short prompts reached the provider
    # A provider that ignores max_tokens cannot flood the worker either.
    with serve_fake_openai(FakeOpenAI(answer=lambda messages: "A" * 50_000)) as fake:
        async with make_client(sub_llm="provider", llm_base_url=fake.url, max_prompt_chars=1000) as client:
            run = await call(client, "exec_python", code="a = llm_query('hi')")
            assert run["status"] == "error" and "answer has 50,000 characters" in run["error"]


async def test_host_mode_refuses_oversize_prompts_and_answers(make_client):
    async with make_client(sub_llm="host", max_prompt_chars=1000) as client:
        run = await call(client, "exec_python", code="a = llm_query('x' * 2000)")
        assert run["status"] == "error" and "over the 1,000 cap" in run["error"]
        run = await call(client, "exec_python", code="b = llm_query('a fair question')")
        assert run["status"] == "paused"
        qid = run["pending"][0]["id"]
        is_error, text = await call_raw(client, "answer_sub_queries", answers={qid: "A" * 1001})
        assert is_error and "--max-prompt-chars" in text
        run = await call(client, "answer_sub_queries", answers={qid: "a fair answer"})
        assert run["status"] == "ok"
        run = await call(client, "exec_python", code="FINAL(b)")
        assert run["final"] == "a fair answer"
