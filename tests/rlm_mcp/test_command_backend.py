"""Sub-queries through a local command (``--sub-llm command --llm-command CMD``), driven by a real MCP
client through exec_python; the commands are small Python scripts written here that play a model CLI."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from support import call, gone, wait_for

BATCH = "answers = llm_query_batched([f'item {i}' for i in range(16)])\nprint(answers[0], answers[15])"


def write_cli(folder: Path, name: str, body: str) -> Path:
    """An executable script ``folder/name`` run by this interpreter; ``body`` is its Python code."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    path.chmod(0o755)
    return path


# Answers "A(<the prompt's last line>)" after a delay that makes later items finish first, and
# appends "<start> <end>" to the log file named by its first argument: the processes' own clocks
# say how many ran at once.
ECHO = """
log = sys.argv[1]
text = sys.stdin.read()
start = time.time()
last = text.rstrip().splitlines()[-1]
number = int(last.split()[-1]) if last.split()[-1].isdigit() else 0
time.sleep(0.15 + 0.02 * (16 - number))
end = time.time()
with open(log, "a") as f:
    f.write(f"{start} {end}\\n")
print(f"A({last})")
"""


def most_at_once(log: Path) -> int:
    spans = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


async def test_a_batch_of_16_runs_through_the_command_concurrently_with_answers_in_order(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "fake-model", ECHO)
    log = tmp_path / "spans.log"
    async with make_client("legacy", llm_command=f"{cli} {log}", max_concurrency=4) as client:
        result = await call(client, "exec_python", code=BATCH + "\nprint(answers == [f'A(item {i})' for i in range(16)])")
        assert result["status"] == "ok", result
        assert result["stdout"] == "A(item 0) A(item 15)\nTrue\n"
        assert len(log.read_text().splitlines()) == 16
        # Several ran at once, never more than --max-concurrency.
        assert 1 < most_at_once(log) <= 4
        status = await call(client, "rlm_status")
        assert status["sub_llm"]["mode"] == "command"
        assert status["sub_queries"]["used"] == 16


async def test_the_command_reads_the_system_prompt_and_the_prompt_on_stdin(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "cat-model", "sys.stdout.write(sys.stdin.read())")
    async with make_client("legacy", llm_command=str(cli)) as client:
        result = await call(client, "exec_python", code="print(llm_query('line one\\nline two'))")
        system, _, prompt = result["stdout"].partition("\n\n")
        assert system.startswith("You are a sub-model") and prompt == "line one\nline two\n"


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process in process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found.append((int(entry), fields[0]))
    return found


HANGS = """
import subprocess
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as f:
    f.write(f"{os.getpid()} {os.getpgid(0)} {child.pid}")
time.sleep(600)
"""


async def test_a_hanging_command_is_killed_with_its_whole_group_at_the_timeout(make_client, tmp_path):
    pids = tmp_path / "pids"
    cli = write_cli(tmp_path / "bin", "hangs", HANGS)
    async with make_client("legacy", llm_command=f"{cli} {pids}", sub_query_timeout=1.5) as client:
        started = time.monotonic()
        result = await call(client, "exec_python", code="print(llm_query_batched(['a', 'b'])[0])")
        took = time.monotonic() - started
        assert "gave no answer within 1.5 s" in result["stdout"] and "process group was killed" in result["stdout"]
        assert took < 15, took
        leader, pgid, child = map(int, pids.read_text().split())
        assert leader == pgid  # a group of its own, apart from the server's
        # Nothing of the group is left running: the command and the child it started are dead (zombies
        # of an init that does not reap are dead too, and not ours to reap).
        await wait_for(lambda: gone(leader) and gone(child), 5, "the command and its child to die")
        assert all(state == "Z" for _, state in group_members(pgid)), group_members(pgid)
        status = await call(client, "rlm_status")
        assert status["sub_llm"]["command"]["running"] == 0


FAILS = """
sys.stdin.read()
for i in range(300):
    print(f"noise line {i}", file=sys.stderr)
print("Error: not logged in; run the CLI once to log in", file=sys.stderr)
sys.exit(3)
"""


async def test_a_failing_command_fails_its_sub_query_with_the_status_and_stderr_tail(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "fails", FAILS)
    async with make_client("legacy", llm_command=str(cli)) as client:
        result = await call(client, "exec_python", code=(
            "try:\n    llm_query('x')\nexcept SubQueryError as e:\n    print(e)\n"
            "print(llm_query_batched(['y'])[0].startswith('Error: '))"))
        assert result["status"] == "ok", result
        message = result["stdout"]
        assert "'fails' exited with status 3" in message
        assert "Error: not logged in; run the CLI once to log in" in message
        assert "noise line 299" in message and "noise line 0\n" not in message  # the tail, not all of it
        assert message.endswith("True\n")


async def test_a_command_killed_by_a_signal_says_which(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "dies", "import signal\nos.kill(os.getpid(), signal.SIGTERM)")
    async with make_client("legacy", llm_command=str(cli)) as client:
        result = await call(client, "exec_python", code="llm_query('x')")
        assert "killed by signal 15 (SIGTERM)" in result["error"]


async def test_a_flood_of_output_is_cut_and_says_so(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "floods", "sys.stdin.read()\nsys.stdout.write('x' * 50_000)")
    async with make_client("legacy", llm_command=str(cli), max_prompt_chars=2200) as client:
        result = await call(client, "exec_python", code="a = llm_query('x')\nprint(len(a), a[-80:])")
        assert result["stdout"].startswith("2") and "output was cut at 2,000 bytes; 48,000 more bytes" in result["stdout"]


async def test_a_command_that_ignores_stdin_still_answers(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "deaf", "print('fixed answer')")
    async with make_client("legacy", llm_command=str(cli)) as client:
        result = await call(client, "exec_python", code="print(llm_query('x' * 300_000))")
        assert result["stdout"] == "fixed answer\n"


async def test_rlm_status_shows_the_program_and_its_arguments_without_secrets(make_client, tmp_path, monkeypatch):
    cli = write_cli(tmp_path / "bin", "keyed", "print(os.environ.get('RLM_AUTH_TOKEN', 'no token'))")
    monkeypatch.setenv("RLM_AUTH_TOKEN", "tok-hidden-9")
    command = f"{cli} --model small --api-key sk-abc123secret --header 'Authorization: Bearer xyz987' TOKEN=zz9"
    async with make_client("legacy", llm_command=command) as client:
        result = await call(client, "exec_python", code="print(llm_query('x'))")
        assert result["stdout"] == "no token\n"  # rlm-mcp's own secrets are not handed to the command
        status = await call(client, "rlm_status")
        shown = status["sub_llm"]["command"]
        assert shown["program"] == str(cli)
        assert shown["args"] == ["--model", "small", "--api-key", "***", "--header", "Authorization: ***",
                                 "TOKEN=***"]
        text = json.dumps(status)
        for secret in ("sk-abc123secret", "xyz987", "zz9", "tok-hidden-9"):
            assert secret not in text


async def test_auto_uses_the_command_only_when_the_client_cannot_sample(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "cli", "sys.stdin.read()\nprint('from the command')")
    async with make_client("legacy", llm_command=str(cli)) as client:
        assert (await call(client, "exec_python", code="print(llm_query('q'))"))["stdout"] == "from the command\n"

    async def sampler(context, params):
        from mcp import types

        return types.CreateMessageResult(role="assistant", model="m",
                                         content=types.TextContent(type="text", text="from sampling"))

    async with make_client("legacy", llm_command=str(cli), sampling_callback=sampler) as client:
        assert (await call(client, "exec_python", code="print(llm_query('q'))"))["stdout"] == "from sampling\n"
    async with make_client("legacy", llm_command=str(cli), sub_llm="command", sampling_callback=sampler) as client:
        assert (await call(client, "exec_python", code="print(llm_query('q'))"))["stdout"] == "from the command\n"


@pytest.mark.parametrize("given", ["--sub-llm command --llm-command CLI", "RLM_LLM_COMMAND=CLI"])
def test_the_command_setting_comes_from_a_flag_or_the_variable(given, tmp_path):
    from rlm_mcp.config import settings_from_args

    cli = write_cli(tmp_path / "bin", "cli", "pass")
    if given.startswith("RLM_"):
        s = settings_from_args([], env={"RLM_LLM_COMMAND": f"{cli} -p"})
    else:
        s = settings_from_args(["--sub-llm", "command", "--llm-command", f"{cli} -p"], env={})
    assert s.llm_command == f"{cli} -p"


# -- --cache-sub-queries -------------------------------------------------------------------------

# Appends each prompt it is asked to the log named by its first argument, then answers.
COUNTS = """
text = sys.stdin.read()
last = text.rstrip().splitlines()[-1]
with open(sys.argv[1], "a") as f:
    f.write(last + "\\n")
time.sleep(0.2)
print(f"A({last})")
"""

CACHE_CODE = ("a = llm_query('same')\nb = llm_query('same')\n"
              "c = llm_query_batched(['other'] * 5 + ['same'])\nprint(a, b, c[0], c[5])")


async def test_the_cache_runs_an_identical_prompt_once_and_concurrent_copies_share_the_call(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "counts", COUNTS)
    asked = tmp_path / "asked.log"
    async with make_client("legacy", llm_command=f"{cli} {asked}", cache_sub_queries=True) as client:
        result = await call(client, "exec_python", code=CACHE_CODE)
        assert result["stdout"] == "A(same) A(same) A(other) A(same)\n"
        assert sorted(asked.read_text().splitlines()) == ["other", "same"]
        status = await call(client, "rlm_status")
        assert status["sub_llm"]["cache"] == {"enabled": True, "hits": 6, "misses": 2, "answers_kept": 2,
                                              "in_flight": 0}
        assert status["sub_queries"]["used"] == 2  # a hit spends no budget


async def test_without_the_flag_every_identical_prompt_is_asked_again(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "counts", COUNTS)
    asked = tmp_path / "asked.log"
    async with make_client("legacy", llm_command=f"{cli} {asked}") as client:
        await call(client, "exec_python", code=CACHE_CODE)
        assert sorted(asked.read_text().splitlines()) == ["other"] * 5 + ["same"] * 3
        assert (await call(client, "rlm_status"))["sub_llm"]["cache"] == {"enabled": False}


# Fails while the flag file is missing (and creates it), then answers.
FLAKY = """
sys.stdin.read()
calls = open(sys.argv[1], "a")
calls.write("call\\n")
calls.close()
flag = sys.argv[1] + ".ok"
if not os.path.exists(flag):
    time.sleep(0.2)
    open(flag, "w").close()
    print("overloaded", file=sys.stderr)
    sys.exit(1)
print("fine")
"""


async def test_a_failure_is_shared_by_the_waiting_copies_and_not_kept(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "flaky", FLAKY)
    calls = tmp_path / "calls.log"
    async with make_client("legacy", llm_command=f"{cli} {calls}", cache_sub_queries=True) as client:
        first = await call(client, "exec_python", code="print(llm_query_batched(['x', 'x', 'x']))")
        assert first["stdout"].count("exited with status 1") == 3 and first["stdout"].count("overloaded") == 3
        assert len(calls.read_text().splitlines()) == 1
        again = await call(client, "exec_python", code="print(llm_query('x'), llm_query('x'))")
        assert again["stdout"] == "fine fine\n"
        assert len(calls.read_text().splitlines()) == 2


def test_the_cache_flag_comes_from_the_flag_or_the_variable():
    from rlm_mcp.config import settings_from_args

    assert settings_from_args([], env={}).cache_sub_queries is False
    assert settings_from_args(["--cache-sub-queries"], env={}).cache_sub_queries is True
    assert settings_from_args([], env={"RLM_CACHE_SUB_QUERIES": "yes"}).cache_sub_queries is True


async def test_a_system_placeholder_puts_the_system_prompt_in_an_argument_instead_of_stdin(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "sys-flag", "print(repr(sys.argv[1:]), repr(sys.stdin.read()))")
    async with make_client("legacy", llm_command=f"{cli} -m tiny -s {{system}} --tag=x{{system}}") as client:
        result = await call(client, "exec_python", code="print(llm_query('the prompt'))")
        args, stdin = result["stdout"].rstrip("\n").split("] ", 1)
        assert args.startswith("['-m', 'tiny', '-s', 'You are a sub-model")
        assert "'--tag=xYou are a sub-model" in args
        assert stdin == "'the prompt'"
        status = await call(client, "rlm_status")
        assert status["sub_llm"]["command"]["args"] == ["-m", "tiny", "-s", "{system}", "--tag=x{system}"]


# Plays the root of rlm_solve when its system prompt (about the REPL) is on stdin, else a sub-LLM.
ROOT = """
text = sys.stdin.read()
if "Python REPL" not in text:
    print("sub:" + text.split("\\n\\n", 1)[1][:10])
    sys.exit(0)
turns = max(text.count("\\nAssistant:\\n") - 1, 0)  # earlier replies; the last label is for this one
if turns == 0:
    print("```repl\\nn = len(context)\\nprint(n)\\n```")
elif turns == 1:
    print("```repl\\nparts = llm_query_batched([context[:10], context[10:20]])\\nprint(parts)\\n```")
else:
    print("```repl\\nFINAL(str(n) + ' ' + parts[0])\\n```")
"""


async def test_rlm_solve_plays_the_root_through_the_command_turn_by_turn(make_client, tmp_path):
    cli = write_cli(tmp_path / "bin", "root", ROOT)
    async with make_client("legacy", llm_command=str(cli)) as client:
        await call(client, "load_context", text="abcdefghijklmnopqrstuvwxyz")
        solved = await call(client, "rlm_solve", question="How long is it?")
    assert solved["completed"] and solved["final"] == "26 sub:abcdefghij"
    assert solved["iterations"] == 3
