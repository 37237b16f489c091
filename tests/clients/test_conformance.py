"""The MCP conformance suite's server scenarios against ``rlm-mcp --http`` on loopback.

The suite (``@modelcontextprotocol/conformance``, pinned in clients/conformance) needs Node >= 22; its
lockfile also pins the ``node`` package, which brings a Node 22 binary, so a machine with Node 20 and
npm can run it. Most of the suite's scenarios call fixtures of the SDKs' "everything" test server
(``test_simple_text``, ``test://static-text``, ``test_simple_prompt``...); only the scenarios that
apply to any server with tools, resources and prompts run here. clients/conformance/RESULTS.md says
why each of the others does not apply.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from npm_packages import ensure_installed
from support import http_server as serve_http

SUITE = Path(__file__).resolve().parents[2] / "clients" / "conformance"
NODE22 = SUITE / "node_modules" / "node" / "bin" / "node"
CLI = SUITE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

APPLICABLE = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "completion-complete",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]

# Scenario -> why it does not apply to rlm-mcp. Kept complete by test_every_scenario_is_classified.
_FIXTURE = "calls the everything-server fixture {} that rlm-mcp does not (and should not) have"
NOT_APPLICABLE = {
    "logging-set-level": "rlm-mcp declares no `logging` capability and sends no log notifications "
                         "(logging/setLevel is deprecated in 2026-07-28), so -32601 is the correct answer",
    "tools-call-simple-text": _FIXTURE.format("tool `test_simple_text`"),
    "tools-call-image": _FIXTURE.format("tool `test_image_content`"),
    "tools-call-audio": _FIXTURE.format("tool `test_audio_content`"),
    "tools-call-embedded-resource": _FIXTURE.format("tool `test_embedded_resource`"),
    "tools-call-mixed-content": _FIXTURE.format("tool `test_multiple_content_types`"),
    "tools-call-with-logging": _FIXTURE.format("tool `test_tool_with_logging`"),
    "tools-call-error": _FIXTURE.format("tool `test_error_handling`"),
    "tools-call-with-progress": _FIXTURE.format("tool `test_tool_with_progress`"),
    "tools-call-sampling": _FIXTURE.format("tool `test_sampling`"),
    "tools-call-elicitation": _FIXTURE.format("tool `test_elicitation`"),
    "elicitation-sep1034-defaults": _FIXTURE.format("tool `test_elicitation_sep1034_defaults`"),
    "elicitation-sep1330-enums": _FIXTURE.format("tool `test_elicitation_sep1330_enums`"),
    "json-schema-2020-12": _FIXTURE.format("tool `json_schema_2020_12_tool`") + " (a pending scenario)",
    "server-sse-polling": _FIXTURE.format("tool `test_reconnection`") + " (a pending scenario)",
    "resources-read-text": _FIXTURE.format("resource `test://static-text`"),
    "resources-read-binary": _FIXTURE.format("resource `test://static-binary`"),
    "resources-templates-read": _FIXTURE.format("resource template `test://template/{id}/data`"),
    "resources-subscribe": "rlm-mcp declares `resources.subscribe: false`; it also subscribes to the fixture `test://watched-resource`",
    "resources-unsubscribe": "rlm-mcp declares `resources.subscribe: false`; it also subscribes to the fixture `test://watched-resource`",
    "prompts-get-simple": _FIXTURE.format("prompt `test_simple_prompt`"),
    "prompts-get-with-args": _FIXTURE.format("prompt `test_prompt_with_arguments`"),
    "prompts-get-embedded-resource": _FIXTURE.format("prompt `test_prompt_with_embedded_resource`"),
    "prompts-get-with-image": _FIXTURE.format("prompt `test_prompt_with_image`"),
}


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def suite() -> list[str]:
    """The command that runs the conformance CLI under its own Node 22, installed if missing."""
    ensure_installed(SUITE, NODE22, CLI)
    return [str(NODE22), str(CLI)]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``rlm-mcp --http`` on a loopback port for all scenarios (each opens its own MCP session)."""
    with serve_http(root=tmp_path_factory.mktemp("conformance-server")) as server:
        yield server.url


def test_every_scenario_is_classified(suite: list[str]) -> None:
    """A suite upgrade that adds a server scenario makes us decide whether it applies."""
    done = subprocess.run([*suite, "list", "--server"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    offered = set(re.findall(r"^\s+- (\S+)", done.stdout, flags=re.MULTILINE))
    assert offered, f"no scenarios in `conformance list --server`:\n{done.stdout}"
    known = set(APPLICABLE) | set(NOT_APPLICABLE)
    assert offered == known, (
        f"new scenarios: {sorted(offered - known)}; gone: {sorted(known - offered)}. "
        "Classify them here and in clients/conformance/RESULTS.md."
    )


@pytest.mark.parametrize("scenario", APPLICABLE)
def test_conformance_scenario_passes(scenario: str, suite: list[str], server_url: str, tmp_path: Path) -> None:
    done = subprocess.run([*suite, "server", "--url", server_url, "--scenario", scenario, "-o", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    found = sorted(tmp_path.glob("*/checks.json"))
    assert found, f"{scenario} wrote no checks.json (exit {done.returncode}):\n{_tail(done.stdout + done.stderr)}"
    checks = json.loads(found[0].read_text())
    failed = [f"{c.get('id')}: {c.get('errorMessage') or c.get('description')}" for c in checks
              if c.get("status") == "FAILURE"]
    assert not failed, f"{scenario} failed checks:\n" + "\n".join(failed)
    assert any(c.get("status") == "SUCCESS" for c in checks), f"{scenario} passed no check: {checks}"
    assert done.returncode == 0, f"{scenario} exit {done.returncode}:\n{_tail(done.stdout + done.stderr)}"
