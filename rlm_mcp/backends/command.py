"""Sub-queries answered by a local command-line model: ``claude -p``, ``codex exec -``, ``ollama run M``...

Each call runs the command (split like a shell would, run without one) in a process group
of its own, writes the request to its stdin and takes the answer from its stdout.

Framing on stdin (UTF-8): the system prompt, a blank line, then the prompt. A chat of
several turns (``rlm_solve``'s root) is written as the system prompt, a blank line, then
each turn as ``User:`` or ``Assistant:`` on a line of its own followed by its text,
turns separated by blank lines, ending with ``Assistant:``. stdin is closed after it.
When an argument contains ``{system}`` (``llm -m M -s {system}``), the system prompt goes
there instead and stdin carries the rest: small models follow a system prompt given as
one far better than the same text at the top of the user's message.

The answer is stdout decoded as UTF-8, stripped of surrounding whitespace, cut at
``max_output`` bytes (the answer then says so). Exit status 0 is success; anything else
is a failed sub-query whose error shows the status and the end of stderr. At ``timeout``
the whole process group is killed (no retry: a model that hangs once usually hangs
again, and the budget is the caller's). When the command exits, anything it left
behind in its group is killed too, so nothing it started outlives the sub-query.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, Process

from ..errors import SubQueryFailed
from .base import ChatMessage, Completion

__all__ = ["CommandBackend", "SYSTEM_PLACEHOLDER", "frame_stdin", "mask_args", "split_command"]

SYSTEM_PLACEHOLDER = "{system}"

_STDERR_TAIL = 2000
_CHUNK = 65536

# rlm-mcp's own secrets: a sub-LLM command has no use for them.
_PRIVATE_VARIABLES = ("RLM_AUTH_TOKEN", "RLM_LLM_API_KEY")

_SECRET_NAME = re.compile(r"(key|token|secret|passw|pwd|auth|credential|bearer|cookie|session)", re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"^(sk-|sk_|pk_|rk_|ghp_|gho_|ghs_|github_pat_|xox[abpr]-|AIza|hf_|glpat-|ya29\.|eyJ)"  # known key prefixes
    r"|^(?=[A-Za-z0-9_\-./+=]{32,}$)(?=.*[0-9])(?=.*[A-Za-z]).*$"  # a long opaque string of letters and digits
)
MASK = "***"


def split_command(command: str) -> list[str]:
    """The argv of ``command`` as a POSIX shell would split it (quotes, backslashes), never run by one.
    Raises ValueError for unbalanced quotes or an empty command."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("the command is empty")
    return argv


def mask_args(args: Sequence[str]) -> list[str]:
    """``args`` fit to show: values that look like keys or tokens become ``***``. Masked: the value of
    an option whose name says key/token/secret/password/auth (``--api-key X``, ``--token=X``,
    ``API_KEY=X``), an ``Authorization: ...`` header's value, and any argument that looks like a key
    itself (a known prefix such as ``sk-``, or a long opaque string of letters and digits)."""
    shown: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            shown.append(MASK)
            hide_next = False
            continue
        name, sep, value = arg.partition("=")
        if sep and _SECRET_NAME.search(name) and value:
            shown.append(f"{name}={MASK}")
        elif ":" in arg and _SECRET_NAME.search(arg.split(":", 1)[0]):  # a header: "Authorization: Bearer x"
            shown.append(f"{arg.split(':', 1)[0]}: {MASK}")
        elif _SECRET_VALUE.search(arg):
            shown.append(MASK)
        else:
            if arg.startswith("-") and _SECRET_NAME.search(arg):
                hide_next = True
            shown.append(arg)
    return shown


def frame_stdin(messages: Sequence[ChatMessage], system: str | None) -> str:
    """What the command reads on stdin (the framing in the module docstring)."""
    head = f"{system}\n\n" if system else ""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return head + messages[0]["content"]
    turns = [f"{'User' if m['role'] == 'user' else 'Assistant'}:\n{m['content']}" for m in messages]
    return head + "\n\n".join(turns) + "\n\nAssistant:\n"


def _child_env(base: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if k not in _PRIVATE_VARIABLES}


class CommandBackend:
    name = "command"

    def __init__(self, command: str | Sequence[str], *, timeout: float = 120.0, max_concurrency: int = 8,
                 max_output: int = 1_000_000, env: Mapping[str, str] | None = None) -> None:
        self.argv = split_command(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError("the command is empty")
        self.program = shutil.which(self.argv[0]) or self.argv[0]
        self.timeout = timeout
        self.max_output = max_output
        self._env = _child_env(os.environ if env is None else env)
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    @property
    def model(self) -> str:
        """The command as it may be shown (secrets masked): it names the model in traces and cache keys."""
        return shlex.join([os.path.basename(self.argv[0]), *mask_args(self.argv[1:])])

    def describe(self) -> dict[str, Any]:
        return {"program": self.program, "args": mask_args(self.argv[1:]), "timeout": self.timeout,
                "max_output_bytes": self.max_output, "calls": self.calls, "running": self.in_flight}

    async def complete(self, messages: list[ChatMessage], *, system: str | None, max_tokens: int) -> Completion:
        argv = self.argv
        if any(SYSTEM_PLACEHOLDER in arg for arg in argv[1:]):
            argv = [argv[0], *(arg.replace(SYSTEM_PLACEHOLDER, system or "") for arg in argv[1:])]
            system = None
        data = frame_stdin(messages, system).encode("utf-8", errors="replace")
        async with self._limiter:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._run(argv, data)
            finally:
                self.in_flight -= 1

    async def _run(self, argv: list[str], data: bytes) -> Completion:
        label = os.path.basename(argv[0])
        with anyio.CancelScope(shield=True):  # a cancellation mid-spawn must not leave an unowned process
            try:
                process = await anyio.open_process(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    start_new_session=True, env=self._env,
                )
            except OSError as exc:
                raise SubQueryFailed(f"the command {label!r} could not be started: {exc.strerror or exc}") from exc
        out = _Capped(self.max_output)
        err = _Tail(_STDERR_TAIL)
        timed_out = False
        try:
            with anyio.move_on_after(self.timeout) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_feed, process, data)
                    tg.start_soon(_drain, process.stdout, out)
                    tg.start_soon(_drain, process.stderr, err)
                    await process.wait()
                    # The command is done: whatever it left running in its group goes now, which also
                    # closes pipes a straggler held open, so the readers end.
                    _kill_group(process.pid)
            timed_out = scope.cancelled_caught
        finally:
            with anyio.CancelScope(shield=True):
                _kill_group(process.pid)
                await process.wait()
                await process.aclose()
        if timed_out:
            raise SubQueryFailed(f"the command {label!r} gave no answer within {self.timeout:g} s "
                                 "(--sub-query-timeout); its process group was killed")
        status = process.returncode
        if status != 0:
            how = (f"was killed by signal {-status} ({_signal_name(-status)})" if status is not None and status < 0
                   else f"exited with status {status}")
            tail = err.text().strip()
            raise SubQueryFailed(f"the command {label!r} {how}; "
                                 + (f"the end of its stderr:\n{tail}" if tail else "it wrote nothing to stderr"))
        text = out.data.decode("utf-8", errors="replace").strip()
        if out.dropped:
            text += (f"\n[... the command's output was cut at {self.max_output:,} bytes; "
                     f"{out.dropped:,} more bytes were dropped]")
        return Completion(text=text, model=self.model)

    async def aclose(self) -> None:
        return None


class _Capped:
    """The first ``limit`` bytes of a stream; the rest is read (so the writer never blocks) and counted."""

    def __init__(self, limit: int) -> None:
        self.limit, self.data, self.dropped = limit, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += chunk[:max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.limit, self.data = limit, bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        del self.data[:-self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def _feed(process: Process, data: bytes) -> None:
    stdin = process.stdin
    assert stdin is not None
    try:
        for start in range(0, len(data), _CHUNK):
            await stdin.send(data[start:start + _CHUNK])
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # the command does not read stdin (or stopped reading): its answer still counts
    finally:
        try:
            await stdin.aclose()
        except (anyio.BrokenResourceError, OSError):
            pass


async def _drain(stream: ByteReceiveStream | None, sink: _Capped | _Tail) -> None:
    if stream is None:
        return
    try:
        while True:
            sink.add(await stream.receive(_CHUNK))
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        return


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
