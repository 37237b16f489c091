"""Drive rlm-mcp from fast-agent, with sampling answered by fast-agent's OpenAI-compatible provider.

Run with the Python of clients/fast-agent/.venv (fast-agent needs Python >= 3.12):

    .venv/bin/python rlm_check.py --rlm-mcp "$(which rlm-mcp)" --base-url http://127.0.0.1:8080/v1 \
        --protocol legacy --protocol modern

fast-agent connects to ``rlm-mcp`` over stdio as configured in a ``fastagent.config.yaml`` written
here; the root agent's model is ``passthrough`` (this script calls the tools itself, so no model
plays the root), and the server's sampling requests go to ``generic.<model>`` at ``--base-url``:
any OpenAI-compatible chat-completions endpoint (llama.cpp, Ollama, vLLM, a test's fake). Protocol
``legacy`` is 2025-11-25 (sampling requests during the call); ``modern`` is 2026-07-28 (the
sub-queries come back as input-required rounds of the same call); each protocol asked for is one
server connection (``rlm_legacy``, ``rlm_modern``) of the same agent. Prints one JSON line with what
each tool call returned, per protocol; exits 1 with FAIL on stderr when a call fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

CODE = """
answers = llm_query_batched(["Name a colour.", "Name a fruit.", "Name a city."])
alone = llm_query("Name a river.")
print(len(answers), alone[:40])
FINAL(" | ".join(answers + [alone]))
"""


def write_config(folder: Path, args: argparse.Namespace) -> Path:
    """fastagent.config.yaml (JSON is YAML): the server, its protocol and its sampling model."""
    config = {
        "default_model": "passthrough",
        "generic": {"api_key": "local", "base_url": args.base_url},
        "logger": {"type": "none", "level": "error", "progress_display": False, "show_chat": False,
                   "show_tools": False},
        "mcp": {
            "servers": {
                f"rlm_{protocol}": {
                    "command": args.rlm_mcp,
                    "args": ["--root", str(folder), "--sub-llm", "sampling"],
                    "protocol_mode": protocol,
                    "sampling": {"model": f"generic.{args.model}"},
                }
                for protocol in args.protocol
            }
        },
    }
    path = folder / "fastagent.config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def structured(result: Any, tool: str) -> dict[str, Any]:
    text = "".join(getattr(block, "text", "") for block in result.content)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {text}")
    return json.loads(text)


async def check(args: argparse.Namespace) -> dict[str, Any]:
    from fast_agent import FastAgent

    folder = Path(tempfile.mkdtemp(prefix="rlm-fast-agent-"))
    os.chdir(folder)  # fast-agent reads its config from here and may write beside it
    fast = FastAgent("rlm-check", config_path=str(write_config(folder, args)), parse_cli_args=False,
                     quiet=True, no_home=True)

    servers = [f"rlm_{protocol}" for protocol in args.protocol]

    @fast.agent(name="root", servers=servers, model="passthrough")
    async def root() -> None:  # pragma: no cover - the decorator only registers the agent
        pass

    report: dict[str, Any] = {}
    async with fast.run() as app:
        agent = app.root
        tools = sorted(t.name for t in (await agent.list_tools()).tools)
        for server in servers:
            loaded = structured(await agent.call_tool(f"{server}__load_context", {"text": "a small context\n" * 100}),
                                "load_context")
            run = structured(await agent.call_tool(f"{server}__exec_python", {"code": CODE}), "exec_python")
            status = structured(await agent.call_tool(f"{server}__rlm_status", {}), "rlm_status")
            report[server] = {"tools": [t.split("__", 1)[1] for t in tools if t.startswith(f"{server}__")],
                              "loaded": loaded, "run": run, "sub_llm": status.get("sub_llm"),
                              "protocol": status.get("protocol_version")}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rlm-mcp", required=True, help="the rlm-mcp command")
    parser.add_argument("--base-url", required=True, help="an OpenAI-compatible endpoint, e.g. http://host/v1")
    parser.add_argument("--model", default="fake-model", help="the model name to ask it for")
    parser.add_argument("--protocol", choices=["legacy", "modern"], action="append", required=True,
                        help="legacy (2025-11-25) or modern (2026-07-28); repeat for both")
    args = parser.parse_args()
    try:
        report = asyncio.run(check(args))
    except Exception as exc:  # noqa: BLE001 - one line for the test to show
        print(f"FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
