"""The three REPLs that ``bench.bench_peers`` drives side by side, behind one async face.

- ``Ours``: the ``rlm-mcp`` server over stdio (SDK ``Client``, ``mode="legacy"``).
- ``Aleph``: ``aleph-rlm``'s own MCP server (its ``aleph`` console script in the peers' venv) over
  stdio, the same way. It runs code in-process (``REPLEnvironment.execute`` on a thread, with
  AST checks and reduced builtins) and has tools for loading a file, peeking and searching.
- ``Rlms``: the official ``rlms`` package's ``LocalREPL`` (``get_environment("local", ...)``,
  what ``RLM.completion`` builds), driven through a small script run by the peers' venv python.
  It has no tools: peeks and searches are code run in the REPL.

Every operation returns ``(seconds, result)`` or raises ``PeerError``. For the MCP servers the
seconds are the client's round trip (what a host pays). For rlms they are taken inside the driver
around the library call: rlms is a library the RLM loop calls in-process, there is no transport,
so the bench's own pipe to the driver is never counted.

The peers live in their own venv (``bench/.peers-venv``, git-ignored), created on first use with
``pip install`` from PyPI as their users would. Nothing of theirs is copied into this project.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from ._common import children

__all__ = ["PEERS_VENV", "Aleph", "Ours", "PeerError", "Rlms", "ensure_peers_venv", "start_engine_driver"]

PEERS_VENV = Path(__file__).resolve().parent / ".peers-venv"
# aleph-rlm 0.9.4 imports ``mcp.server.fastmcp``, which mcp 2.x removed: with the ``mcp`` extra
# alone pip picks mcp 2.x and ``aleph`` dies at start-up with a message saying to pin mcp<2.
REQUIREMENTS = ("aleph-rlm[mcp]", "mcp<2", "rlms")
_IMPORT_CHECK = "import aleph.mcp.local_server, mcp.server.fastmcp, rlm.environments"
_VERSIONS = ("aleph-rlm", "rlms", "mcp")

DRIVER = r'''
"""rlms driver for bench/bench_peers.py: one JSON request a line on stdin, one JSON reply a line
on stdout. Times are taken here, around the library calls."""
import json
import sys
import time

frames = sys.stdout
sys.stdout = sys.stderr  # a stray print must not break a frame
t0 = time.perf_counter()
from rlm.environments import get_environment
import_s = time.perf_counter() - t0
env = get_environment("local", {"context_payload": "warm up"})
env.execute_code("x = 1")


def reply(**fields):
    frames.write(json.dumps(fields) + "\n")
    frames.flush()


def engine(name, path, runs):
    """``x = 1`` straight on an engine object, no server: rlms LocalREPL or aleph REPLEnvironment."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if name == "aleph":
        from aleph.repl.sandbox import REPLEnvironment
        run = REPLEnvironment(text).execute
    else:
        run = get_environment("local", {"context_payload": text}).execute_code
    times = []
    for i in range(runs + 20):
        t0 = time.perf_counter()
        run("x = 1")
        if i >= 20:
            times.append(time.perf_counter() - t0)
    return times


reply(ok=True, import_s=import_s)
for line in sys.stdin:
    request = json.loads(line)
    op = request["op"]
    try:
        if op == "load":
            if env is not None:  # replacing: free the old context first
                env.cleanup()
                env = None
            t0 = time.perf_counter()
            with open(request["path"], encoding="utf-8") as f:
                text = f.read()
            t1 = time.perf_counter()
            env = get_environment("local", {"context_payload": text})
            t2 = time.perf_counter()
            chars = len(text)
            del text  # the caller's copy; LocalREPL keeps its own
            reply(ok=True, t=t2 - t0, read=t1 - t0, chars=chars)
        elif op == "exec":
            t0 = time.perf_counter()
            result = env.execute_code(request["code"])
            reply(ok=True, t=time.perf_counter() - t0, stdout=result.stdout, stderr=result.stderr)
        elif op == "engine":
            reply(ok=True, times=engine(request["engine"], request["path"], request["runs"]))
        elif op == "quit":
            reply(ok=True)
            break
        else:
            reply(ok=False, error=f"unknown op {op!r}")
    except Exception as exc:
        reply(ok=False, error=f"{type(exc).__name__}: {exc}")
'''


class PeerError(Exception):
    """One operation of one peer failed; the message says how, for the table."""


# -- the peers' venv ---------------------------------------------------------------------------


def _venv_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def ensure_peers_venv() -> dict[str, str]:
    """Create ``bench/.peers-venv`` and install the peers from PyPI if they are not there yet;
    returns the installed versions."""
    python = _venv_python()
    if not python.exists():
        print(f"creating {PEERS_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    if subprocess.run([str(python), "-c", _IMPORT_CHECK], capture_output=True).returncode != 0:
        print(f"pip install {' '.join(REQUIREMENTS)} into {PEERS_VENV} ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *REQUIREMENTS], check=True)
        check = subprocess.run([str(python), "-c", _IMPORT_CHECK], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"the peers do not import after installing: {check.stderr.strip()[-500:]}")
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, json, sys; "
         "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))", *_VERSIONS],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# -- processes ---------------------------------------------------------------------------------


def _direct_children() -> set[int]:
    """Processes whose parent is this one (a spawned server shows up here)."""
    return set(children(os.getpid()))


def _new_child(before: set[int]) -> int:
    new = _direct_children() - before
    if len(new) != 1:
        raise RuntimeError(f"expected one new child process, found {sorted(new)}")
    return new.pop()


# -- MCP servers -------------------------------------------------------------------------------


class _McpPeer:
    key = ""
    label = ""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pid = 0
        self.client: Any = None

    def _params(self) -> Any:
        raise NotImplementedError

    async def start(self, stack: AsyncExitStack) -> None:
        from mcp import Client
        from mcp.client.stdio import stdio_client

        before = _direct_children()
        errlog = stack.enter_context((self.folder / f"{self.key}.stderr").open("w"))
        self.client = await stack.enter_async_context(
            Client(stdio_client(self._params(), errlog=errlog), mode="legacy", read_timeout_seconds=900))
        self.pid = _new_child(before)
        await self._warm_up()

    async def _warm_up(self) -> None:
        raise NotImplementedError

    async def _call(self, tool: str, **arguments: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        result = await self.client.call_tool(tool, arguments)
        elapsed = time.perf_counter() - t0
        if result.is_error:
            raise PeerError(f"{tool}: {_text(result)[:300]}")
        return elapsed, result

    async def ping(self) -> float:
        with warnings.catch_warnings():  # ping is legacy-only, and legacy is what we speak
            warnings.filterwarnings("ignore", message="ping is removed")
            t0 = time.perf_counter()
            await self.client.send_ping()
            return time.perf_counter() - t0


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


class Ours(_McpPeer):
    key = "ours"
    label = "ours (rlm-mcp)"

    def _params(self) -> Any:
        from mcp.client.stdio import StdioServerParameters

        return StdioServerParameters(command="rlm-mcp", args=["--root", str(self.folder), "--log-level", "WARNING"])

    async def _warm_up(self) -> None:
        # The first load starts the worker (and a token count); keep both out of the figures.
        await self._call("load_context", name="warm", text="warm up")
        for _ in range(5):
            await self.exec("x = 1")
        for _ in range(600):  # the exact count's process exits when done: idle is without it
            _, reply = await self._call("list_contexts")
            if all(c["token_count"] != "counting" for c in reply.structured_content["contexts"]):
                break
            await anyio.sleep(0.1)

    async def load(self, path: Path) -> tuple[float, str]:
        t, result = await self._call("load_context", name="context", path=str(path))
        data = result.structured_content
        # The exact count runs in the background after the load returned: wait for it (it uses
        # every core, and must not slow what is measured next), and say when it came.
        started = time.perf_counter()
        listed = data
        while listed.get("token_count") == "counting" and time.perf_counter() - started < 600:
            await anyio.sleep(0.1)
            _, reply = await self._call("list_contexts")
            listed = next(c for c in reply.structured_content["contexts"] if c["name"] == "context")
        return t, (f"{listed['tokens']:,} tokens ({listed['token_encoding']}, {listed['token_count']}, "
                   f"{t + time.perf_counter() - started:.1f} s after the load began)")

    async def exec(self, code: str) -> tuple[float, str]:
        t, result = await self._call("exec_python", code=code)
        data = result.structured_content
        if data["status"] != "ok":
            raise PeerError(f"exec_python: {data['status']}: {str(data.get('error'))[:300]}")
        return t, data["stdout"]

    async def peek(self, start: int, end: int) -> tuple[float, str]:
        t, result = await self._call("peek", name="context", start=start, end=end)
        return t, result.structured_content["text"]

    async def search(self, pattern: str, max_results: int) -> tuple[float, list[int]]:
        t, result = await self._call("search", pattern=pattern, name="context", max_results=max_results, window=100)
        # rlm-mcp counts lines from 0 (as peek does); the peers count from 1.
        return t, [m["line"] + 1 for m in result.structured_content["matches"]]


_ALEPH_OUTPUT = re.compile(r"\*\*Output:\*\*\n```\n(.*?)\n```", re.S)
_ALEPH_LINE = re.compile(r"^\*\*Line (\d+):\*\*$", re.M)


class Aleph(_McpPeer):
    key = "aleph"
    label = "aleph"
    CONTEXT_ID = "doc"

    def _params(self) -> Any:
        from mcp.client.stdio import StdioServerParameters

        # load_file is an "action" tool: off unless enabled; read-only keeps aleph from writing
        # memory packs into the folder. Everything else is aleph's default.
        return StdioServerParameters(
            command=str(PEERS_VENV / "bin" / "aleph"),
            args=["--enable-actions", "--action-policy", "read-only", "--workspace-root", str(self.folder),
                  "--workspace-mode", "fixed"])

    async def _warm_up(self) -> None:
        await self._call("load_context", content="warm up", context_id="warm")
        for _ in range(5):
            await self._call("exec_python", code="x = 1", context_id="warm")

    async def load(self, path: Path) -> tuple[float, str]:
        t, result = await self._call("load_file", path=str(path), context_id=self.CONTEXT_ID)
        text = _text(result)
        if text.startswith("Error"):
            raise PeerError(f"load_file: {text[:300]}")
        # aleph names the context ``ctx``; give it the name the shared code uses (not timed).
        await self.exec("context = ctx")
        tokens = re.search(r"~[\d,]+ tokens", text)
        return t, f"{tokens.group(0) if tokens else text[:80]} (its chars / 4 estimate)"

    async def exec(self, code: str) -> tuple[float, str]:
        t, result = await self._call("exec_python", code=code, context_id=self.CONTEXT_ID)
        text = _text(result)
        if text.startswith(("## Execution Error", "Error")):
            raise PeerError(f"exec_python: {text[:300]}")
        found = _ALEPH_OUTPUT.search(text)
        return t, (found.group(1) if found else "")

    async def peek(self, start: int, end: int) -> tuple[float, str]:
        t, result = await self._call("peek_context", start=start, end=end, context_id=self.CONTEXT_ID)
        return t, _text(result)

    async def search(self, pattern: str, max_results: int) -> tuple[float, list[int]]:
        t, result = await self._call("search_context", pattern=pattern, context_id=self.CONTEXT_ID,
                                     max_results=max_results, context_lines=1, record_evidence=False)
        text = _text(result)
        if text.startswith("Error"):
            raise PeerError(f"search_context: {text[:300]}")
        return t, [int(n) for n in _ALEPH_LINE.findall(text)]


# -- rlms through the driver -------------------------------------------------------------------

# The in-REPL equivalent of a search tool: hits with char offset, line number and a window.
_RLMS_SEARCH = r'''
import re
import json
hits = []
for m in re.finditer({pattern!r}, context):
    s = m.start()
    hits.append({{"start": s, "line": context.count("\n", 0, s) + 1, "text": context[max(0, s - 100):m.end() + 100]}})
    if len(hits) >= {max_results}:
        break
print(json.dumps(hits))
'''


class _Driver:
    """The driver script in the peers' venv python, one request at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pid = 0
        self._process: Any = None
        self._stdout: BufferedByteReceiveStream | None = None

    async def start(self, stack: AsyncExitStack) -> dict[str, Any]:
        script = self.folder / "rlms_driver.py"
        script.write_text(DRIVER)
        errlog = stack.enter_context((self.folder / f"driver-{id(self)}.stderr").open("w"))
        self._process = await anyio.open_process([str(_venv_python()), str(script)], stderr=errlog)
        stack.push_async_callback(self._close)
        self.pid = self._process.pid
        self._stdout = BufferedByteReceiveStream(self._process.stdout)
        return await self._receive()

    async def request(self, **fields: Any) -> dict[str, Any]:
        await self._process.stdin.send((json.dumps(fields) + "\n").encode())
        return await self._receive()

    async def _receive(self) -> dict[str, Any]:
        assert self._stdout is not None
        try:
            reply = json.loads(await self._stdout.receive_until(b"\n", 1 << 30))
        except (anyio.EndOfStream, anyio.IncompleteRead) as exc:
            raise PeerError("the rlms driver exited") from exc
        if not reply.get("ok"):
            raise PeerError(reply.get("error", "the rlms driver failed"))
        return reply

    async def _close(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(10):
                    await self.request(op="quit")
                    await self._process.wait()
            except Exception:  # noqa: BLE001 - closing: a stuck or dead driver is killed below
                pass
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()
            await self._process.aclose()


async def start_engine_driver(folder: Path, stack: AsyncExitStack) -> _Driver:
    """A driver used only for ``engine`` requests (``x = 1`` on aleph's and rlms's engine objects)."""
    driver = _Driver(folder)
    await driver.start(stack)
    return driver


class Rlms:
    key = "rlms"
    label = "rlms"

    def __init__(self, folder: Path) -> None:
        self._driver = _Driver(folder)
        self.pid = 0

    async def start(self, stack: AsyncExitStack) -> None:
        await self._driver.start(stack)
        self.pid = self._driver.pid

    async def load(self, path: Path) -> tuple[float, str]:
        reply = await self._driver.request(op="load", path=str(path))
        init = reply["t"] - reply["read"]
        return reply["t"], f"read {reply['read'] * 1e3:.0f} ms + LocalREPL() {init * 1e3:.0f} ms"

    async def exec(self, code: str) -> tuple[float, str]:
        reply = await self._driver.request(op="exec", code=code)
        if reply["stderr"].strip():
            raise PeerError(f"execute_code: {reply['stderr'].strip()[-300:]}")
        return reply["t"], reply["stdout"]

    async def peek(self, start: int, end: int) -> tuple[float, str]:
        t, out = await self.exec(f"print(context[{start}:{end}], end='')")
        return t, out

    async def search(self, pattern: str, max_results: int) -> tuple[float, list[int]]:
        t, out = await self.exec(_RLMS_SEARCH.format(pattern=pattern, max_results=max_results))
        return t, [hit["line"] for hit in json.loads(out)]
