"""Settings come from flags, then RLM_* variables, then defaults; docs/configuration.md documents every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_mcp.config import OPTIONS, Settings, settings_from_args

README = Path(__file__).resolve().parents[2] / "README.md"
CONFIGURATION = README.parent / "docs" / "configuration.md"


def test_defaults_fit_real_rlm_runs():
    s = settings_from_args([], env={})
    assert s.transport == "stdio" and s.host == "127.0.0.1"
    assert s.max_sub_queries >= 1000 and s.max_concurrency == 8 and s.max_depth == 1
    assert s.allow_url is False


def test_flags_win_over_environment_which_wins_over_defaults(tmp_path: Path):
    env = {"RLM_EXEC_TIMEOUT": "5", "RLM_MAX_CONCURRENCY": "3", "RLM_ALLOW_URL": "1", "RLM_HTTP": "1"}
    s = settings_from_args(["--max-concurrency", "4", "--root", str(tmp_path)], env=env)
    assert s.exec_timeout == 5.0 and s.max_concurrency == 4 and s.allow_url is True
    assert s.transport == "http" and s.roots == (tmp_path.resolve(),)


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--sub-llm", "magic"], {}),
        (["--sub-llm", "provider"], {}),
        (["--max-concurrency", "0"], {}),
        (["--port", "70000"], {}),
        (["--root", "/definitely/not/here"], {}),
        (["--root", "~nobody-such-user"], {}),  # expanduser raises RuntimeError for an unknown user
        ([], {"RLM_ROOTS": "~nobody-such-user"}),
        ([], {"RLM_EXEC_TIMEOUT": "soon"}),
    ],
)
def test_bad_settings_exit_with_a_message(argv, env, capsys):
    with pytest.raises(SystemExit) as raised:
        settings_from_args(argv, env=env)
    assert raised.value.code != 0


def test_the_api_key_is_never_shown_in_a_repr():
    assert "s3cr3t" not in repr(Settings(llm_api_key="s3cr3t", auth_token="s3cr3t"))


def test_the_configuration_page_documents_every_flag_and_variable():
    text = CONFIGURATION.read_text()
    for flag, name, _, _ in OPTIONS:
        assert f"`{flag}`" in text, flag
        assert f"`RLM_{name.upper()}`" in text, name
    for extra in ("--http", "--root", "--allow-url", "--allow-private-urls", "--model-hint", "RLM_MODEL_HINT",
                  "--cache-sub-queries", "RLM_CACHE_SUB_QUERIES"):
        assert extra in text


def test_ci_runs_exactly_the_readmes_test_command():
    lines = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("rlm-mcp") and "pytest" in lines[1]
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert lines[1] in ci
