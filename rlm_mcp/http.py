"""The streamable HTTP app: the SDK's app plus Host/Origin checks and an optional bearer token."""

from __future__ import annotations

import hmac
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings

__all__ = ["build_http_app"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection always on: the served host plus loopback names are accepted."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if settings.host not in _LOOPBACK and settings.host not in ("0.0.0.0", "::"):
        shown = f"[{settings.host}]" if ":" in settings.host else settings.host
        hosts.append(f"{shown}:*")
        origins.append(f"http://{shown}:*")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


class BearerAuth:
    """Refuse every HTTP request without ``Authorization: Bearer <token>`` (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"error":"unauthorized: send Authorization: Bearer <token>"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class ProtocolSessionTraffic:
    """What the RLM sessions of 2025-11-25 clients learn from the HTTP traffic of their
    ``Mcp-Session-Id`` (the SDK offers no public hook for a protocol session's life):

    - a request or an open stream (the client's standalone GET) keeps the session alive, as it
      keeps the SDK's; so a connected client idle for --idle-timeout keeps its contexts, and one
      that vanished loses them when the SDK drops its protocol session;
    - a ``DELETE`` the SDK accepts (2xx) ends the RLM session at once, worker and files."""

    def __init__(self, app: ASGIApp, registry: Any) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = dict(scope.get("headers", [])).get(b"mcp-session-id", b"").decode("latin-1")
        if scope["type"] != "http" or not session_id:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        with self.registry.protocol_traffic(session_id):
            await self.app(scope, receive, watch)
        if scope.get("method") == "DELETE" and status and 200 <= status[0] < 300:
            await self.registry.end_protocol_session(session_id)


def build_http_app(mcp: MCPServer, settings: Settings) -> Any:
    app: Any = mcp.streamable_http_app(
        host=settings.host,
        transport_security=_security(settings),
        session_idle_timeout=settings.idle_timeout,
        # The SDK's 4 MiB default would refuse load_context(text=...) far below --max-load-mb
        # with a bare 413; JSON escaping can double a text's size on the wire.
        max_request_body_size=2 * settings.max_load_mb * 1024 * 1024 + 1024 * 1024,
    )
    app = ProtocolSessionTraffic(app, mcp.rlm_registry)  # type: ignore[attr-defined]
    if settings.auth_token:
        app = BearerAuth(app, settings.auth_token)
    return app
