"""Every setting is checked when ``rlm-mcp`` starts: a value that cannot work ends the real process with
exit status 2 and one line naming the flag or variable, never a traceback, never a failure at the
first tool call."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port, rlm_mcp_command
from rlm_mcp import __version__
from rlm_mcp.config import settings_from_args


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    return subprocess.run([rlm_mcp_command(), *args], env={**base, **(env or {})}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


FILE = Path(__file__)

BROKEN = [  # (flags, variables, what the one line must say): each item the issue found broken
    (["--exec-timeout", "inf"], {}, "--exec-timeout must be a finite number"),
    (["--exec-timeout", "nan"], {}, "--exec-timeout must be a finite number"),
    ([], {"RLM_SEARCH_TIMEOUT": "inf"}, "RLM_SEARCH_TIMEOUT must be a finite number"),
    ([], {"RLM_EXEC_TIMEOUT": "-1"}, "RLM_EXEC_TIMEOUT must be positive"),
    (["--trace-dir", str(FILE)], {}, "--trace-dir"),
    (["--trace-dir", f"{FILE}/traces"], {}, "--trace-dir"),
    ([], {"RLM_TRACE_DIR": "/proc/no-such-folder"}, "RLM_TRACE_DIR"),
    (["--log-level", "verbose"], {}, "--log-level must be one of DEBUG, INFO"),
    (["--llm-base-url", "localhost:8080/v1"], {}, "--llm-base-url must be an http(s) URL"),
    ([], {"RLM_LLM_BASE_URL": "http://:8080/v1"}, "RLM_LLM_BASE_URL must be an http(s) URL"),
    ([], {"RLM_ROOT": "/definitely/not/here"}, "RLM_ROOT '/definitely/not/here' is not a folder"),
    ([], {"RLM_MAX_FILES": "many"}, "RLM_MAX_FILES='many' is not a valid int"),
    ([], {"RLM_ALLOW_URL": "maybe"}, "RLM_ALLOW_URL='maybe' must be one of"),
    (["--port", "x"], {}, "--port"),
    (["--llm-retries", "-1"], {}, "--llm-retries must not be negative"),
    (["--sub-llm", "command"], {}, "--sub-llm command needs --llm-command"),
    (["--llm-command", "no-such-model-cli-xyz -p"], {}, "the program 'no-such-model-cli-xyz' is not on PATH"),
    ([], {"RLM_LLM_COMMAND": "/nowhere/claude -p"}, "RLM_LLM_COMMAND: the program '/nowhere/claude' is not an"),
    (["--llm-command", "claude -p 'unclosed"], {}, "--llm-command cannot be split"),
]


@pytest.mark.parametrize(("argv", "env", "says"), BROKEN, ids=[" ".join(a) or next(iter(e)) for a, e, _ in BROKEN])
def test_a_broken_setting_stops_the_server_with_one_line_and_status_2(argv, env, says):
    done = run_cli(*argv, env=env)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlm-mcp: error: ") and says in lines[0], done.stderr


def test_version_prints_the_package_version():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"rlm-mcp {__version__}"


def test_rlm_root_is_the_variable_of_root_and_rlm_roots_still_works(tmp_path: Path):
    assert settings_from_args([], env={"RLM_ROOT": str(tmp_path)}).roots == (tmp_path.resolve(),)
    assert settings_from_args([], env={"RLM_ROOTS": str(tmp_path)}).roots == (tmp_path.resolve(),)
    other = tmp_path / "other"
    other.mkdir()
    both = {"RLM_ROOT": str(other), "RLM_ROOTS": str(tmp_path)}
    assert settings_from_args([], env=both).roots == (other.resolve(),)


def test_a_missing_trace_folder_is_made_and_the_log_level_is_any_case(tmp_path: Path):
    settings = settings_from_args(["--trace-dir", str(tmp_path / "a" / "b"), "--log-level", "debug"], env={})
    assert settings.trace_dir == (tmp_path / "a" / "b").resolve() and settings.trace_dir.is_dir()
    assert settings.log_level == "DEBUG"


def test_http_keeps_stdout_empty_and_warns_about_an_open_host_without_a_token(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([rlm_mcp_command(), "--http", "--host", "0.0.0.0", "--port", str(port)],
                                stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
        assert reply.status_code >= 400  # answered: a request reached the server and was logged, or not
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert out.read_text() == ""
    assert "without --auth-token" in err.read_text()
