"""fast-agent (clients/fast-agent, pinned in its requirements.txt) drives the installed rlm-mcp over
stdio, and its OpenAI-compatible provider answers the sub-queries, on both protocols.

The bug this guards: rlm-mcp sent ``modelPreferences`` on every sampling request and fast-agent
passed it on to its provider call, which raised before any request left. Here the provider is
fast-agent's own ``generic`` OpenAI client talking HTTP to a fake chat-completions server on
loopback (the only fake: the model). fast-agent needs Python >= 3.12, so it has its own venv, which
.ci/run creates; without it the test is skipped.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import rlm_mcp_command
from llm_server import FakeOpenAI, serve_fake_openai

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "fast-agent"
PYTHON = CLIENT / ".venv" / "bin" / "python"
PROMPTS = ["Name a colour.", "Name a fruit.", "Name a city.", "Name a river."]


@pytest.fixture(scope="module")
def fast_agent() -> str:
    if not PYTHON.exists():
        pytest.skip(f"fast-agent's venv is missing: create it with Python >= 3.12 ({CLIENT}/.venv, "
                    f"pip install -r {CLIENT}/requirements.txt; .ci/run does)")
    done = subprocess.run([str(PYTHON), "-c", "import fast_agent"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"fast-agent is not installed in {CLIENT}/.venv: {done.stderr.strip()[-300:]}")
    return str(PYTHON)


def test_fast_agent_answers_sub_queries_through_its_provider_on_both_protocols(fast_agent: str) -> None:
    with serve_fake_openai(FakeOpenAI()) as fake:
        done = subprocess.run([fast_agent, str(CLIENT / "rlm_check.py"), "--rlm-mcp", rlm_mcp_command(),
                               "--base-url", fake.url, "--protocol", "legacy", "--protocol", "modern"],
                              capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    expected_final = " | ".join(f"ANSWER[{p}]" for p in PROMPTS)
    for server, protocol, mode in (("rlm_legacy", "2025-11-25", "sampling"), ("rlm_modern", "2026-07-28", "mrtr")):
        seen = report[server]
        assert seen["protocol"] == protocol
        assert {"load_context", "exec_python", "answer_sub_queries", "rlm_status"} <= set(seen["tools"])
        assert seen["loaded"]["lines"] == 100
        assert seen["run"]["status"] == "ok", seen["run"]
        assert seen["run"]["final"] == expected_final
        assert seen["sub_llm"]["mode"] == mode
    # Every sub-query reached the provider as a plain chat completion: four per protocol, the
    # model fast-agent was configured with, nothing of MCP's modelPreferences in the request.
    asked = [r["messages"][-1]["content"] for r in fake.requests]
    assert sorted(asked) == sorted(PROMPTS * 2)
    for request in fake.requests:
        assert request["model"] == "fake-model"
        assert not {"model_preferences", "modelPreferences"} & set(request), request
