"""The installed ``rlm-mcp`` command over stdio and over streamable HTTP, as real clients reach it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import pid_alive, rlm_mcp_command
from support import http_server as serve_http


async def _call(client: Client, tool: str, **args):
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_stdio_server_runs_a_session_end_to_end(tmp_path: Path):
    doc = tmp_path / "doc.txt"
    doc.write_text("needle at line one\n" + "hay\n" * 10_000)
    params = StdioServerParameters(command=rlm_mcp_command(), args=["--root", str(tmp_path)],
                                   env={**os.environ, "RLM_LOG_LEVEL": "DEBUG"})
    async with Client(params, mode="legacy") as client:
        summary = await _call(client, "load_context", path=str(doc))
        assert summary["lines"] == 10_001
        run = await _call(client, "exec_python", code="print(context.count('hay'))")
        assert run["stdout"] == "10000\n"
        status = await _call(client, "rlm_status")
        worker = status["worker"]["pid"]
        assert pid_alive(worker)
    # Closing the client ends the server, which kills and reaps its worker.
    with anyio.fail_after(10):
        while pid_alive(worker):
            await anyio.sleep(0.05)


async def test_stdio_server_speaks_the_2026_protocol_too(tmp_path: Path):
    params = StdioServerParameters(command=rlm_mcp_command(), args=["--root", str(tmp_path)])
    async with Client(params) as client:
        await _call(client, "load_context", text="abc")
        run = await _call(client, "exec_python", code="FINAL(context.upper())")
        assert run["final"] == "ABC"


def test_cli_help_lists_the_flags():
    out = subprocess.run([rlm_mcp_command(), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for flag in ("--http", "--sub-llm", "--root", "--allow-url", "--exec-timeout", "--memory-mb",
                 "--max-concurrency", "--max-depth", "--llm-base-url"):
        assert flag in out.stdout


def test_cli_refuses_bad_flags_with_a_message():
    out = subprocess.run([rlm_mcp_command(), "--sub-llm", "telepathy"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "--sub-llm" in out.stderr


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    with serve_http(root=tmp_path) as server:
        yield server.url


async def test_http_sessions_are_isolated_and_their_workers_reaped(http_server: str):
    async with Client(http_server, mode="legacy") as alice, Client(http_server, mode="legacy") as bob:
        await _call(alice, "load_context", text="alice's secret")
        await _call(bob, "load_context", text="bob's data", name="bobs")
        await _call(alice, "exec_python", code="mine = 'A'")
        seen_by_bob = await _call(bob, "exec_python", code="print(sorted(contexts), SHOW_VARS())")
        assert "alice" not in seen_by_bob["stdout"] and "mine" not in seen_by_bob["stdout"]
        assert (await _call(bob, "list_contexts"))["contexts"][0]["name"] == "bobs"
        pids = [(await _call(c, "rlm_status"))["worker"]["pid"] for c in (alice, bob)]
        assert pids[0] != pids[1] and all(pid_alive(p) for p in pids)
    # Each client's DELETE ends its HTTP session; the server kills and reaps that worker.
    with anyio.fail_after(15):
        while any(pid_alive(p) for p in pids):
            await anyio.sleep(0.1)


def test_http_rejects_foreign_host_and_origin_headers(http_server: str):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    evil_host = httpx.post(http_server, json=body, headers={**headers, "Host": "evil.example:80"})
    assert evil_host.status_code in (400, 403, 421)
    evil_origin = httpx.post(http_server, json=body, headers={**headers, "Origin": "http://evil.example"})
    assert evil_origin.status_code in (400, 403)
    fine = httpx.post(http_server, json=body, headers=headers)
    assert fine.status_code == 200


async def test_http_accepts_a_text_context_bigger_than_the_sdks_4_mib_default(http_server: str):
    text = "0123456789abcdef\n" * 400_000  # 6.8 MB
    async with Client(http_server, mode="legacy") as client:
        summary = await _call(client, "load_context", text=text)
        assert summary["chars"] == len(text)
