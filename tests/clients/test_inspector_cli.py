"""The MCP Inspector's command-line clients (clients/inspector, pinned by its lockfile) against the
installed ``rlm-mcp`` over stdio.

Inspector 2.x needs Node >= 22.19; the lockfile also pins the ``node`` package, which brings a
Node 22 binary, as clients/conformance does. ``inspector --cli`` makes one request per run, so it
checks the tool list (with its schema portability check); ``mcpdo``, the Inspector's connection
CLI, keeps one connection open in a daemon across runs, so it drives a stateful session:
load_context, exec_python twice (a variable survives), peek, resources/list and a wrong argument.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import rlm_mcp_command
from npm_packages import ensure_installed

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "inspector"
NODE22 = CLIENT / "node_modules" / "node" / "bin" / "node"
CLIENTS = CLIENT / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients"
INSPECTOR = CLIENTS / "launcher" / "build" / "index.js"
MCPDO = CLIENTS / "mcpdo" / "build" / "mcp-bin.js"


@pytest.fixture(scope="module")
def node() -> str:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Inspector checks need Node and npm")
    ensure_installed(CLIENT, NODE22, INSPECTOR, MCPDO)
    return str(NODE22)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose home is a temporary folder: the Inspector keeps its catalog, settings
    and secrets under ~/.mcp-inspector, and this test must leave the user's alone."""
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "MCP_CATALOG_PATH": str(home / "catalog.json"),
            "MCP_INSPECTOR_SECRET_STORE": "file", "NO_COLOR": "1"}


def test_inspector_cli_lists_every_tool_and_finds_no_schema_portability_problem(
        node: str, home: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run([node, str(INSPECTOR), "--cli", "--method", "tools/list", "--strict", "--format", "json",
                           "-q", rlm_mcp_command(), "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env=home, cwd=tmp_path)
    # --strict: exit 6 and the problems on stderr if a schema would not port to other clients.
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    tools = {t["name"]: t for t in json.loads(done.stdout)["result"]["tools"]}
    assert {"load_context", "exec_python", "peek", "answer_sub_queries", "rlm_status"} <= set(tools)
    assert tools["peek"]["inputSchema"]["properties"]["unit"]["enum"] == ["chars", "lines"]


class Mcpdo:
    """Runs mcpdo against one private daemon (its own socket and token, none of the user's)."""

    def __init__(self, node: str, env: dict[str, str], cwd: Path) -> None:
        self.node, self.env, self.cwd = node, env, cwd
        exports = self.run("private", check=True)
        self.env.update(re.findall(r"^export (MCP_INSPECTOR_DAEMON_\w+)='([^']*)'$", exports, flags=re.MULTILINE))
        assert "MCP_INSPECTOR_DAEMON_DIR" in self.env, exports

    def run(self, *args: str, check: bool = False) -> str:
        done = subprocess.run([self.node, str(MCPDO), *args], capture_output=True, text=True, timeout=60,
                              env=self.env, cwd=self.cwd)
        if check:
            assert done.returncode == 0, f"mcpdo {' '.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}"
        return done.stdout

    def call(self, tool: str, **args: object) -> dict:
        return json.loads(self.run("--format", "json", "@rlm", "tools/call", tool, json.dumps(args)))

    def stop(self) -> None:
        self.run("daemon", "stop")
        shutil.rmtree(self.env["MCP_INSPECTOR_DAEMON_DIR"], ignore_errors=True)


@pytest.fixture
def mcpdo(node: str, home: dict[str, str], tmp_path: Path) -> Iterator[Mcpdo]:
    client = Mcpdo(node, home, tmp_path)
    try:
        yield client
    finally:
        client.stop()  # the daemon ends its connection, and the server with it


def test_inspector_connection_cli_runs_a_stateful_session(mcpdo: Mcpdo, tmp_path: Path) -> None:
    mcpdo.run("--format", "json", "connect", "--connection", "rlm", "--", rlm_mcp_command(), "--root",
              str(tmp_path), check=True)
    loaded = mcpdo.call("load_context", text="hello world\nsecond line\n", name="notes")
    assert loaded["isError"] is False and loaded["structuredContent"]["lines"] == 2
    # The text a model reads is compact JSON, the same data as the structured content.
    assert json.loads(loaded["content"][0]["text"]) == loaded["structuredContent"]
    assert "\n" not in loaded["content"][0]["text"]
    first = mcpdo.call("exec_python", code="shout = contexts['notes'].upper()")
    assert first["structuredContent"]["status"] == "ok"
    second = mcpdo.call("exec_python", code="print(shout.splitlines()[1])")
    assert second["structuredContent"]["stdout"] == "SECOND LINE\n"  # the variable survived the call
    peeked = mcpdo.call("peek", name="notes", start=1, unit="lines")
    assert peeked["structuredContent"]["text"] == "second line\n"
    listed = json.loads(mcpdo.run("--format", "json", "@rlm", "resources/list"))
    assert "context://notes" in [r["uri"] for r in listed["resources"]]
    wrong = mcpdo.call("peek", unit="bytes")
    assert wrong["isError"] is True
    assert wrong["content"][0]["text"] == ("Invalid arguments for peek: unit must be one of 'chars', 'lines', "
                                           "not the string 'bytes'.")
