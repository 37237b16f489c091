"""The TypeScript SDK client (clients/typescript) drives the installed rlm-mcp over stdio and HTTP.

It checks what a host in the field sees (TypeScript SDK 1.x, protocol 2025-11-25): the tool list,
load_context, and llm_query / llm_query_batched answered in order by the client's sampling handler.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from npm_packages import ensure_installed
from support import http_server as serve_http

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "typescript"
TSX = CLIENT / "node_modules" / "tsx" / "dist" / "cli.mjs"
TSC = CLIENT / "node_modules" / "typescript" / "bin" / "tsc"


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def node() -> str:
    """Node, with the client's dependencies installed from its lockfile when they are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TypeScript client check needs Node >= 20 (and npm)")
    ensure_installed(CLIENT, TSX, TSC)
    return node


def run_client(node: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node, str(TSX), "src/check.ts", *args], cwd=CLIENT, capture_output=True, text=True,
                          timeout=90)


def assert_passed(done: subprocess.CompletedProcess[str], label: str) -> None:
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{_tail(done.stderr)}"
    assert done.returncode == 0, f"the TypeScript client failed over {label} (exit {done.returncode}):\n{output}"
    assert f"PASS [{label}]" in done.stdout, output


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """``rlm-mcp --http`` on a free loopback port; yields its /mcp URL."""
    with serve_http(root=tmp_path) as server:
        yield server.url


def test_typescript_client_passes_over_streamable_http(node: str, http_server: str) -> None:
    assert_passed(run_client(node, "http", http_server), "http")


def test_typescript_client_type_checks(node: str) -> None:
    """tsx runs the script without checking types; tsc keeps it honest against the SDK's types."""
    done = subprocess.run([node, str(TSC), "--noEmit", "-p", "."], cwd=CLIENT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"tsc --noEmit failed:\n{done.stdout}{done.stderr}"


def test_typescript_client_reports_a_failure_clearly(node: str) -> None:
    """A server that is not there is a non-zero exit and one FAIL line, not a hang or a pass."""
    done = run_client(node, "stdio", sys.executable, "-c", "pass")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL [stdio]: could not connect to" in done.stderr
