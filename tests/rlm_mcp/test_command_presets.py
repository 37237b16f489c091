"""The presets of docs/sub-queries.md, each run as written against a fake CLI of the same name that
reads its input and writes its answer the way the real one does (argv, stdin, stdout, stderr)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from support import call
from test_command_backend import write_cli

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sub-queries.md"


def presets() -> dict[str, str]:
    """{program: --llm-command} from the page's presets table."""
    found = {}
    for line in PAGE.read_text().splitlines():
        match = re.match(r"\| [^|]+ \| `([^`]+)` \|", line)
        if match and not match.group(1).startswith("--"):
            command = match.group(1)
            found[shlex.split(command)[0]] = command
    return found


# What each fake shares: log its argv, check the framing rlm-mcp promises, answer "<name>: <item line>".
COMMON = """
import json
args = sys.argv[1:]
with open(os.environ["FAKE_CLI_LOG"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), args]) + "\\n")

def answer(prompt):
    if not prompt.startswith("You are a sub-model"):
        print("the system prompt did not come first on stdin", file=sys.stderr)
        sys.exit(9)
    item = [line for line in prompt.splitlines() if line.startswith("item ")][-1]
    return f"{os.path.basename(sys.argv[0])}: {item}"
"""

FAKES = {
    # claude -p: the prompt from stdin when no prompt argument is given; the reply on stdout.
    "claude": """
if "-p" not in args and "--print" not in args:
    print("Error: Raw mode is not supported on the current process.stdin", file=sys.stderr)
    sys.exit(1)
prompt = sys.stdin.read()
if not prompt.strip():
    print("Error: Input must be provided either through stdin or as a prompt argument when using --print", file=sys.stderr)
    sys.exit(1)
print(answer(prompt))
""",
    # codex exec -: '-' reads the prompt from stdin; activity on stderr, the final message alone on stdout.
    "codex": """
if args[:1] != ["exec"] or args[-1] != "-":
    print("usage: codex exec [OPTIONS] [PROMPT]", file=sys.stderr)
    sys.exit(2)
prompt = sys.stdin.read()
print("OpenAI Codex (research preview)\\n--------\\nworkdir: .\\nmodel: gpt-5\\n--------", file=sys.stderr)
print("user\\n" + prompt + "\\nthinking\\n**Answering**", file=sys.stderr)
print(answer(prompt))
print("tokens used: 1234", file=sys.stderr)
""",
    # gemini -p VALUE: headless; VALUE is appended to what came on stdin.
    "gemini": """
if "-p" not in args or args.index("-p") + 1 >= len(args):
    print("Not enough arguments following: p", file=sys.stderr)
    sys.exit(42)
value = args[args.index("-p") + 1]
stdin = sys.stdin.read()
print(answer(stdin + "\\n\\n" + value if stdin else value))
""",
    # ollama run MODEL: the prompt from stdin when it is not a terminal; a blank line after the answer.
    "ollama": """
if args[:1] != ["run"] or len(args) < 2:
    print("Error: accepts between 1 and N arg(s)", file=sys.stderr)
    sys.exit(1)
print(answer(sys.stdin.read()) + "\\n")
""",
    # llm -m MODEL: the prompt from stdin when no prompt argument is given.
    "llm": """
if "-m" not in args:
    print("Error: no model given and no default set", file=sys.stderr)
    sys.exit(1)
print(answer(sys.stdin.read()))
""",
}


def test_the_page_has_a_preset_for_each_cli_the_issue_names():
    assert sorted(presets()) == ["claude", "codex", "gemini", "llm", "ollama"]


@pytest.mark.parametrize("program", sorted(FAKES))
async def test_a_preset_runs_as_written_against_its_fake_cli(program, make_client, tmp_path, monkeypatch):
    command = presets()[program]
    bin_dir = tmp_path / "bin"
    write_cli(bin_dir, program, COMMON + FAKES[program])
    log = tmp_path / "argv.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLI_LOG", str(log))
    async with make_client("legacy", llm_command=command, max_concurrency=2) as client:
        result = await call(client, "exec_python", code="print(llm_query_batched([f'item {i}' for i in range(4)]))")
        assert result["stdout"] == repr([f"{program}: item {i}" for i in range(4)]) + "\n", result
        status = await call(client, "rlm_status")
    assert status["sub_llm"]["mode"] == "command"
    assert status["sub_llm"]["command"]["program"] == str(bin_dir / program)
    # The arguments reached the program exactly as the page writes them: split, never through a shell.
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [[program, shlex.split(command)[1:]]] * 4
