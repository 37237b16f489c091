"""Which RLM session serves a request, and when sessions end.

Every session has a handle (``handles.mint()``) that tools take as ``session`` and return in
their results. A call with ``session`` gets that session or the error ``SessionGone``; it never
falls back to another. Without it:

- stdio (no HTTP headers): the one session of the process;
- HTTP on a handshake protocol (2025-11-25) with an ``Mcp-Session-Id``: that protocol session's;
- HTTP on 2026-07-28 (no protocol sessions, SEP-2567): a fresh session, whose handle the result
  carries; later calls name it. An input-required round names it through its signed
  ``request_state`` (``mrtr``).

The connection is found with public SDK APIs only: the negotiated version
(``protocol_version``) and the HTTP request's headers (``request``). The SDK routes a request
to a protocol session only after checking its ``Mcp-Session-Id``, so the header names it.

Bounds: at most ``--max-sessions`` HTTP sessions (sessions that never held anything go first
when full); a session idle for ``--idle-timeout`` ends with its worker and files, except the
stdio session and those of 2025-11-25 clients still connected (a stream open), which only stop
their worker; a client's DELETE of its protocol session ends its session (``http.py``);
``--max-workers`` caps the running workers (``workers.py``).
"""

from __future__ import annotations

import hmac
import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from . import handles, mrtr
from .config import Settings
from .errors import InvalidInput, ServerFull, SessionGone
from .session import RlmSession
from .workers import WorkerCap

__all__ = ["SessionKind", "SessionRegistry"]

logger = logging.getLogger(__name__)

_SESSION_ID_HEADER = "mcp-session-id"

# The sessions the current request resolved, so that none of them counts as idle while it runs.
_in_request: ContextVar[list[RlmSession] | None] = ContextVar("rlm_sessions_in_request", default=None)


class SessionKind(Enum):
    PROCESS = "process"    # stdio: the one session, as long as the server runs
    PROTOCOL = "protocol"  # the session of an Mcp-Session-Id (HTTP, protocol 2025-11-25)
    MINTED = "minted"      # minted for a call without one (HTTP, protocol 2026-07-28)


@dataclass
class _Entry:
    session: RlmSession
    kind: SessionKind
    credential: bytes | None
    protocol_id: str | None = None


def _request_of(ctx: Context | ServerRequestContext[Any, Any]) -> ServerRequestContext[Any, Any]:
    return ctx.request_context if isinstance(ctx, Context) else ctx


def _headers(request: ServerRequestContext[Any, Any]) -> Any:
    """The HTTP request's headers (as ``Context.headers`` reads them); None on stdio."""
    return getattr(request.request, "headers", None)


def _gone_message() -> str:
    return ("The session you passed is gone (expired after --idle-timeout, closed, or unknown); its contexts "
            "and variables are not available. Omit `session` to start a new one: its handle comes back in "
            "the result as `session`, pass that on later calls.")


class SessionRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._entries: dict[str, _Entry] = {}
        self._protocol: dict[str, str] = {}  # Mcp-Session-Id -> handle
        self._protocol_open: dict[str, int] = {}  # Mcp-Session-Id -> HTTP requests and streams open
        self._process: RlmSession | None = None
        self._counter = 0
        self.on_new_session: list[Any] = []
        self.workers = WorkerCap(settings.max_workers, lambda: self.sessions)

    # -- finding the session of a call ------------------------------------------------------

    async def for_context(self, ctx: Context | ServerRequestContext[Any, Any], handle: str | None = None
                          ) -> RlmSession:
        """The session a call works on (see the module docstring); ``handle`` is its ``session``."""
        request = _request_of(ctx)
        headers = _headers(request)
        credential = headers.get("authorization") if headers is not None and self.settings.auth_token else None
        state_handle = mrtr.handle_in_state(ctx.request_state if isinstance(ctx, Context) else None)
        if handle is not None and not isinstance(handle, str):
            raise InvalidInput("session must be the string handle an earlier result returned as `session`.")
        if handle is not None and state_handle is not None and not hmac.compare_digest(
                handle.encode("utf-8", "surrogatepass"), state_handle.encode()):
            raise InvalidInput("This request_state belongs to another session than `session` names; call the "
                               "tool again without request state.")
        handle = handle if handle is not None else state_handle
        if handle is not None:
            session = self._lookup(handle, credential)
        elif headers is None:
            session = self._process_session()
        elif request.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS and headers.get(_SESSION_ID_HEADER):
            session = await self._protocol_session(headers[_SESSION_ID_HEADER], credential)
        else:
            session = await self._mint(SessionKind.MINTED, credential)
        session.last_used = anyio.current_time()
        held = _in_request.get()
        if held is not None:
            session.in_requests += 1
            held.append(session)
        return session

    async def implied_session(self, ctx: Context | ServerRequestContext[Any, Any]) -> RlmSession | None:
        """The session a request without ``session`` works on, if one is implied (stdio, or an
        Mcp-Session-Id); None on protocol 2026-07-28 over HTTP, where none is minted for it."""
        request = _request_of(ctx)
        headers = _headers(request)
        if headers is None:
            return self._process_session()
        protocol_id = headers.get(_SESSION_ID_HEADER)
        if request.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS and protocol_id:
            credential = headers.get("authorization") if self.settings.auth_token else None
            return await self._protocol_session(protocol_id, credential)
        return None

    def _lookup(self, handle: str, credential: str | None) -> RlmSession:
        entry = self._entries.get(handle)
        # A handle used with other credentials is refused as if unknown: nothing says it exists.
        if entry is None or not handles.same_credential(entry.credential, credential):
            logger.debug("refused session handle %s: %s", handles.short(handle),
                        "unknown or ended" if entry is None else "other credentials")
            raise SessionGone(_gone_message())
        return entry.session

    def _process_session(self) -> RlmSession:
        if self._process is None:
            self._process = self._new(SessionKind.PROCESS, None, "stdio")
        return self._process

    async def _protocol_session(self, protocol_id: str, credential: str | None) -> RlmSession:
        handle = self._protocol.get(protocol_id)
        if handle is not None and handle in self._entries:
            return self._entries[handle].session
        session = await self._mint(SessionKind.PROTOCOL, credential)
        raced = self._protocol.get(protocol_id)
        if raced is not None and raced in self._entries:  # a concurrent first call minted one meanwhile
            await self._end(session.handle, "a concurrent call made this protocol session's first")
            return self._entries[raced].session
        self._entries[session.handle].protocol_id = protocol_id
        self._protocol[protocol_id] = session.handle
        return session

    async def _mint(self, kind: SessionKind, credential: str | None) -> RlmSession:
        if len(self._entries) >= self.settings.max_sessions:
            await self._drop_empty_sessions()
        if len(self._entries) >= self.settings.max_sessions:
            raise ServerFull(
                f"The server holds its maximum of {self.settings.max_sessions} sessions (--max-sessions), so it "
                "cannot start a new one. If you have a session, pass its handle as `session` (from the `session` "
                "field of your earlier results). Idle sessions end after "
                f"{self.settings.idle_timeout:g} s (--idle-timeout); the server's operator can raise --max-sessions.")
        session = self._new(kind, credential, "http")
        session.fresh = kind is SessionKind.MINTED
        return session

    def _new(self, kind: SessionKind, credential: str | None, label: str) -> RlmSession:
        self._counter += 1
        handle = handles.mint()
        session = RlmSession(self.settings, label=f"{label}-{self._counter}", handle=handle,
                             worker_slot=self.workers.slot)
        for hook in self.on_new_session:
            hook(session)
        self._entries[handle] = _Entry(session, kind, handles.credential_digest(credential))
        logger.debug("new RLM session %s (%s, handle %s)", session.label, kind.value, handles.short(handle))
        return session

    async def _drop_empty_sessions(self) -> None:
        """When full, sessions that never held anything (a client that made one call without
        `session` and never came back) make room first."""
        for handle, entry in sorted(self._entries.items(), key=lambda item: item[1].session.last_used):
            s = entry.session
            if entry.kind is not SessionKind.PROCESS and s.holds_nothing and not s.in_use:
                await self._end(handle, "it never held a context or a worker, and the server was full")

    # -- ending sessions ----------------------------------------------------------------------

    @property
    def sessions(self) -> list[RlmSession]:
        return [entry.session for entry in self._entries.values()]

    @contextmanager
    def protocol_traffic(self, protocol_id: str) -> Iterator[None]:
        """An HTTP request or stream of a protocol session is open (``http.py``): its session is
        not idle, as the SDK does not reap a protocol session with a request or stream open."""
        self._protocol_open[protocol_id] = self._protocol_open.get(protocol_id, 0) + 1
        try:
            yield
        finally:
            left = self._protocol_open.pop(protocol_id) - 1
            if left:
                self._protocol_open[protocol_id] = left
            handle = self._protocol.get(protocol_id)
            if handle is not None and handle in self._entries:
                self._entries[handle].session.last_used = anyio.current_time()

    async def end_protocol_session(self, protocol_id: str) -> None:
        """The client deleted its protocol session (HTTP DELETE): its RLM session ends too."""
        handle = self._protocol.get(protocol_id)
        if handle is not None:
            await self._end(handle, "the client ended its protocol session")

    async def _end(self, handle: str, why: str) -> None:
        entry = self._entries.pop(handle, None)
        if entry is None:
            return
        if entry.protocol_id is not None:
            self._protocol.pop(entry.protocol_id, None)
        if entry.session is self._process:
            self._process = None
        logger.debug("closing RLM session %s (handle %s): %s", entry.session.label, handles.short(handle), why)
        with anyio.CancelScope(shield=True):
            await entry.session.aclose()

    async def aclose(self) -> None:
        for handle in list(self._entries):
            await self._end(handle, "the server is stopping")

    async def reap_idle(self) -> int:
        """Fail pauses older than --pause-timeout; end HTTP sessions idle longer than --idle-timeout
        (the stdio session only stops its worker). Returns how many sessions or workers ended."""
        now = anyio.current_time()
        for session in self.sessions:
            since = session.paused_since
            if since is not None and now - since > self.settings.pause_timeout:
                logger.debug("failing the abandoned pause of %s", session.label)
                try:
                    await session.cancel_pause(
                        f"no answers within {self.settings.pause_timeout:g} s (--pause-timeout); "
                        "the sub-queries were abandoned"
                    )
                except Exception:  # noqa: BLE001 - one broken session must not stop the reaper
                    logger.exception("could not cancel the pause of %s", session.label)
        now = anyio.current_time()
        ended = 0
        for handle, entry in list(self._entries.items()):
            session = entry.session
            # A long execution is not idleness: stopping its worker would kill the code mid-run.
            # A pause is: over HTTP, a client that left mid-pause would otherwise hold its worker
            # until --pause-timeout.
            if session.in_use or now - session.last_used <= self.settings.idle_timeout:
                continue
            # The stdio session, and one whose client holds a stream open (connected, only quiet),
            # keep their contexts; only the worker stops.
            if entry.kind is SessionKind.PROCESS or self._protocol_open.get(entry.protocol_id or ""):
                if session.worker_running and not session.paused:
                    logger.debug("stopping idle worker of %s", session.label)
                    await session.stop_worker(f"idle for {self.settings.idle_timeout:g} s (--idle-timeout)")
                    ended += 1
            else:
                await self._end(handle, f"idle for {self.settings.idle_timeout:g} s (--idle-timeout)")
                ended += 1
        return ended

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SessionRegistry]:
        """Lifespan: the idle reaper runs while the server does; all sessions close after."""
        async def reaper() -> None:
            interval = max(min(self.settings.idle_timeout / 4, self.settings.pause_timeout / 4, 30.0), 0.05)
            while True:
                await anyio.sleep(interval)
                await self.reap_idle()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reaper)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await self.aclose()

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: the sessions a request works on are in use until it ends."""
        held: list[RlmSession] = []
        token = _in_request.set(held)
        try:
            return await call_next(ctx)
        finally:
            _in_request.reset(token)
            for session in held:
                session.in_requests -= 1
                session.last_used = anyio.current_time()

    # -- per-call extras ------------------------------------------------------------------------

    async def refresh_client_roots(self, ctx: Context, session: RlmSession) -> None:
        """Add the client's MCP roots (file:// folders it offers) to the folders loads may read."""
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.roots is None or not ctx.session.can_send_request:
            return
        try:
            with anyio.fail_after(10), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # roots are deprecated only in 2026-07-28
                result = await ctx.session.list_roots()
        except Exception:  # noqa: BLE001 - roots are a bonus; the configured roots still apply
            logger.debug("client advertised roots but list_roots failed", exc_info=True)
            return
        roots = []
        for root in result.roots:
            uri = urlparse(str(root.uri))
            if uri.scheme == "file":
                path = Path(unquote(uri.path))
                if path.is_dir():
                    roots.append(path.resolve())
        session.extra_roots = roots

    def status(self, session: RlmSession, ctx: Context) -> dict[str, Any]:
        status = session.status()
        status["protocol_version"] = ctx.protocol_version
        status["max_depth"] = self.settings.max_depth
        status["sessions"] = {"held": len(self._entries), "max": self.settings.max_sessions}
        status["workers"] = {"running": sum(s.worker_running for s in self.sessions),
                             "max": self.settings.max_workers}
        return status

