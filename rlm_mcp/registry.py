"""Which RLM session serves a request, and when sessions end.

One RLM session per MCP connection: stdio has one; streamable HTTP has one per
``Mcp-Session-Id``. The session lives in the SDK's per-connection state and is
closed (worker killed and reaped) by the connection's exit stack when the
client disconnects, the HTTP session is deleted or the SDK reaps it as idle.

Requests of protocol 2026-07-28 arrive without a connection or session id (each
is a self-contained exchange), so they share one process-wide session: right for
stdio, where the process has one client; over HTTP, use protocol 2025-11-25
(Mcp-Session-Id) when clients must be isolated.

Independently, a worker idle for ``--idle-timeout`` seconds is stopped; its
session keeps the contexts and starts a new worker on next use. Over HTTP the
SDK also ends a session idle that long, and the session's contexts go with it.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
from mcp.server.mcpserver import Context
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from .config import Settings
from .session import RlmSession

__all__ = ["SessionRegistry"]

logger = logging.getLogger(__name__)

_STATE_KEY = "rlm_mcp.session"


def _connection_of(ctx: Context) -> Any:
    """The SDK's per-client Connection behind a request (None if the SDK changes shape)."""
    return getattr(ctx.session, "_connection", None)


class SessionRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: weakref.WeakSet[RlmSession] = weakref.WeakSet()
        self._shared: RlmSession | None = None
        self._counter = 0
        self.on_new_session: list[Any] = []

    def _new(self, label: str) -> RlmSession:
        self._counter += 1
        session = RlmSession(self.settings, label=f"{label}-{self._counter}")
        for hook in self.on_new_session:
            hook(session)
        self._sessions.add(session)
        return session

    async def for_context(self, ctx: Context) -> RlmSession:
        connection = _connection_of(ctx)
        # Handshake-era connections persist across requests; 2026-07-28 requests each get a
        # fresh connection object, so they cannot carry a session.
        if (
            connection is not None
            and connection.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
            and getattr(connection, "has_standalone_channel", False)
        ):
            session = connection.state.get(_STATE_KEY)
            if session is None:
                label = "http" if connection.session_id else "connection"
                session = self._new(label)
                connection.state[_STATE_KEY] = session
                connection.exit_stack.push_async_callback(self._close, session)
            return session
        if self._shared is None:
            self._shared = self._new("shared")
        return self._shared

    @property
    def sessions(self) -> list[RlmSession]:
        return list(self._sessions)

    async def _close(self, session: RlmSession) -> None:
        logger.debug("closing RLM session %s", session.label)
        with anyio.CancelScope(shield=True):
            await session.aclose()
        self._sessions.discard(session)

    async def aclose(self) -> None:
        for session in list(self._sessions):
            await self._close(session)
        self._shared = None

    async def reap_idle(self) -> int:
        """Fail pauses older than --pause-timeout; stop the workers of sessions idle longer than
        --idle-timeout. Returns how many workers were stopped."""
        now = anyio.current_time()
        for session in list(self._sessions):
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
        stopped = 0
        for session in list(self._sessions):
            # A long execution is not idleness: stopping its worker would kill the code mid-run.
            if (session.worker_running and not session.paused and not session.busy
                    and now - session.last_used > self.settings.idle_timeout):
                logger.debug("stopping idle worker of %s", session.label)
                await session.stop_worker()
                stopped += 1
        return stopped

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
            logger.info("client advertised roots but list_roots failed", exc_info=True)
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
        return status
