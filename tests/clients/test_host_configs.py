"""The ready host configurations in clients/configs, checked the way a host would use them.

Each file parses as JSON in its host's format, names the installed ``rlm-mcp``, passes the real CLI
parser, sets only ``RLM_*`` variables the server reads, and starts a server over stdio that answers
``rlm_status`` with the sub-LLM backend the file promises. Placeholder folders become a tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters

from conftest import BIN, rlm_mcp_command
from rlm_mcp.config import OPTIONS, settings_from_args

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
CONFIGS = CLIENTS / "configs"
EXPECTED = {
    "claude-desktop/claude_desktop_config.json",
    "claude-code/.mcp.json",
    "vscode/.vscode/mcp.json",
    "cursor/.cursor/mcp.json",
    "local-model/claude_desktop_config.ollama.json",
    "local-model/llamacpp.mcp.json",
}
# What a user (or the host, for ${workspaceFolder}) replaces with a real folder.
PLACEHOLDERS = {"/path/to/your/docs", "${workspaceFolder}"}
# Read by rlm_mcp.config._from_env besides the RLM_<OPTION> variables of OPTIONS.
EXTRA_ENV = {"RLM_HTTP", "RLM_ROOT", "RLM_ROOTS", "RLM_MODEL_HINT", "RLM_ALLOW_URL", "RLM_ALLOW_PRIVATE_URLS"}
OPTION_ENV = {f"RLM_{name.upper()}": (name, kind) for _, name, kind, _ in OPTIONS}


def load(rel: str) -> tuple[str, dict[str, Any]]:
    """The file's top-level key and its ``rlm`` entry (VS Code says "servers", the rest "mcpServers")."""
    data = json.loads((CONFIGS / rel).read_text())
    key = "servers" if ".vscode" in Path(rel).parts else "mcpServers"
    assert set(data) == {key}, f"{rel}: expected only {key!r} at the top level, found {sorted(data)}"
    return key, data[key]["rlm"]


def readme_claude_code_entry() -> dict[str, Any]:
    """The `claude mcp add rlm -- ...` line of clients/README.md, as the entry Claude Code stores."""
    lines = re.findall(r"^claude mcp add rlm -- .*$", (CLIENTS / "README.md").read_text(), re.MULTILINE)
    assert lines, "clients/README.md shows no `claude mcp add rlm -- ...` line"
    words = shlex.split(lines[0], comments=True)
    command = words[words.index("--") + 1:]
    return {"command": command[0], "args": command[1:]}


ENTRIES = sorted(EXPECTED) + ["README: claude mcp add"]


def entry_for(name: str) -> dict[str, Any]:
    return readme_claude_code_entry() if name.startswith("README") else load(name)[1]


def host_env(entry: dict[str, Any]) -> dict[str, str]:
    """What a host passes: its PATH (here with the venv's scripts, as an installed rlm-mcp would be) and
    the entry's env."""
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **entry.get("env", {})}


def concrete_args(entry: dict[str, Any], folder: Path) -> list[str]:
    return [str(folder) if arg in PLACEHOLDERS else arg for arg in entry.get("args", [])]


def test_every_host_has_a_config_and_every_config_is_tested():
    found = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.json")}
    assert found == EXPECTED


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_config_is_json_in_its_hosts_format(rel: str):
    key, entry = load(rel)
    assert isinstance(entry["command"], str)
    assert all(isinstance(a, str) for a in entry.get("args", []))
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in entry.get("env", {}).items())
    if key == "servers":  # VS Code requires the transport type
        assert entry["type"] == "stdio"
    allowed = {"command", "args", "env"} | ({"type"} if key == "servers" or rel.endswith(".mcp.json") else set())
    assert set(entry) <= allowed, f"{rel}: unexpected fields {set(entry) - allowed}"


@pytest.mark.parametrize("name", ENTRIES)
def test_command_is_the_installed_console_script(name: str):
    entry = entry_for(name)
    assert entry["command"] == "rlm-mcp"
    found = shutil.which(entry["command"], path=host_env(entry)["PATH"])
    assert found is not None and Path(found).resolve() == Path(rlm_mcp_command()).resolve()


@pytest.mark.parametrize("name", ENTRIES)
def test_args_and_env_pass_the_real_cli_parser(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    entry = entry_for(name)
    monkeypatch.chdir(tmp_path)  # where the host starts the server, so that "--root ." means tmp_path
    args = concrete_args(entry, tmp_path)
    roots = [args[i + 1] for i, a in enumerate(args) if a == "--root"]
    assert roots and all(r in (str(tmp_path), ".") for r in roots), f"unknown --root values in {entry['args']}"
    env = entry.get("env", {})
    settings = settings_from_args(args, env=env)
    assert settings.roots == (tmp_path.resolve(),)
    assert settings.transport == "stdio"
    for var, value in env.items():
        assert var in OPTION_ENV or var in EXTRA_ENV, f"{var} is not a variable rlm-mcp reads"
        if var in OPTION_ENV:
            field, kind = OPTION_ENV[var]
            assert getattr(settings, field) == kind(value), f"{var}={value!r} did not reach Settings.{field}"


def expected_backend(entry: dict[str, Any]) -> str | None:
    """The provider URL a local-model config points at, or None when sub-queries go to the host."""
    args, env = entry.get("args", []), entry.get("env", {})
    if "--llm-base-url" in args:
        return args[args.index("--llm-base-url") + 1]
    return env.get("RLM_LLM_BASE_URL")


@pytest.mark.parametrize("name", ENTRIES)
async def test_config_starts_a_server_that_answers_rlm_status(name: str, tmp_path: Path):
    entry = entry_for(name)
    (tmp_path / "notes.txt").write_text("the server can read this folder\n")
    params = StdioServerParameters(command=entry["command"], args=concrete_args(entry, tmp_path),
                                   env=host_env(entry), cwd=tmp_path)
    async with Client(params, mode="legacy") as client:  # no sampling: like Claude Desktop/Code, Cursor
        status = (await client.call_tool("rlm_status", {})).structured_content
        loaded = await client.call_tool("load_context", {"path": str(tmp_path / "notes.txt")})
    assert not loaded.is_error, loaded.content[0].text
    assert status["limits"]["roots"] == [str(tmp_path.resolve())]
    url = expected_backend(entry)
    if url:
        assert status["sub_llm"]["mode"] == "provider"
        assert status["sub_llm"]["provider"]["base_url"] == url
    else:
        assert status["sub_llm"]["mode"] == "host"


async def test_vscode_config_sends_sub_queries_to_the_clients_model(tmp_path: Path):
    entry = load("vscode/.vscode/mcp.json")[1]
    seen: list[str] = []

    async def sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen.append(params.messages[-1].content.text)
        return types.CreateMessageResult(role="assistant", model="copilot-stand-in",
                                         content=types.TextContent(type="text", text="42"))

    params = StdioServerParameters(command=entry["command"], args=concrete_args(entry, tmp_path),
                                   env=host_env(entry), cwd=tmp_path)
    async with Client(params, mode="legacy", sampling_callback=sampling) as client:
        asked = (await client.call_tool("sub_query", {"prompt": "What is six times seven?"})).structured_content
        status = (await client.call_tool("rlm_status", {})).structured_content
    assert asked["answer"] == "42" and seen == ["What is six times seven?"]
    assert status["sub_llm"]["mode"] == "sampling"


class _ChatCompletions(BaseHTTPRequestHandler):
    """POST /v1/chat/completions like Ollama or llama.cpp's server; records each request body."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))  # type: ignore[attr-defined]
        reply = json.dumps({
            "id": "c1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"{body['model']} read the prompt"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_model() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("rel", ["local-model/claude_desktop_config.ollama.json", "local-model/llamacpp.mcp.json"])
async def test_local_model_config_sends_sub_queries_to_the_provider(rel: str, tmp_path: Path, local_model):
    entry = load(rel)[1]
    here = f"http://127.0.0.1:{local_model.server_address[1]}/v1"
    url = expected_backend(entry)
    args = [here if a == url else a for a in concrete_args(entry, tmp_path)]
    env = {k: here if v == url else v for k, v in host_env(entry).items()}
    params = StdioServerParameters(command=entry["command"], args=args, env=env, cwd=tmp_path)
    async with Client(params, mode="legacy") as client:
        result = await client.call_tool("exec_python", {"code": "FINAL(llm_query('Summarise: hello'))"})
    assert not result.is_error, result.content[0].text
    model = args[args.index("--llm-model") + 1] if "--llm-model" in args else entry["env"]["RLM_LLM_MODEL"]
    assert result.structured_content["final"] == f"{model} read the prompt"
    path, body = local_model.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == model
    assert "Summarise: hello" in body["messages"][-1]["content"]
