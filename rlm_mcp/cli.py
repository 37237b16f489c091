"""``rlm-mcp``: serve stdio by default, or streamable HTTP with ``--http``. Logs go to stderr."""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Sequence

import anyio

from sandbox import Isolation, Limits, SandboxError, SandboxSession, sweep_stale

from .config import Settings, settings_from_args

__all__ = ["main", "run"]


def _configure_logging(settings: Settings) -> None:
    # stdout carries MCP frames in stdio mode: nothing else may ever write there.
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


async def run(settings: Settings) -> None:
    from .server import build_server  # here, so that `rlm-mcp trace ...` starts without the MCP SDK

    mcp = build_server(settings)
    if settings.transport == "stdio":
        await mcp.run_stdio_async()
        return
    import uvicorn

    from .http import build_http_app

    app = build_http_app(mcp, settings)
    # log_config=None: uvicorn's own handlers would print the access log on stdout; its loggers go to
    # the root logger (stderr) instead, and the access log is off: a line per MCP message is noise.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    logging.getLogger(__name__).info("rlm-mcp serving streamable HTTP on http://%s:%d/mcp", settings.host,
                                     settings.port)
    await server.serve()


async def check_walls(settings: Settings) -> dict[str, dict[str, object]]:
    """Start one worker to see which operating-system walls this machine gives it (a worker reports
    them from inside). Raises ``SandboxError`` when ``--isolation strict`` cannot have them all."""
    probe = SandboxSession(Limits(exec_timeout=settings.exec_timeout, memory_mb=settings.memory_mb),
                           isolation=Isolation(settings.isolation, settings.bwrap))
    async with probe:
        return probe.walls


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["trace"]:  # rlm-mcp trace view|export: offline tools, no server
        from .trace.cli import main as trace_main

        raise SystemExit(trace_main(args[1:]))
    settings = settings_from_args(args)
    _configure_logging(settings)
    log = logging.getLogger(__name__)
    if settings.transport == "http" and not settings.auth_token and not _is_loopback(settings.host):
        log.warning("--host %s serves beyond this machine without --auth-token: anyone who can reach port %d "
                    "can run code in the sandbox and read the loaded contexts; set RLM_AUTH_TOKEN",
                    settings.host, settings.port)
    for folder in sweep_stale():
        log.info("removed %s, left behind by a server that was killed", folder)
    try:
        walls = anyio.run(check_walls, settings)
    except SandboxError as exc:
        if settings.isolation == "strict":
            print(f"rlm-mcp: --isolation strict: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        log.warning("the sandbox worker could not be started to check its walls: %s", exc)
    else:
        down = {name: w.get("detail") for name, w in walls.items() if not w.get("up")}
        log.info("sandbox walls up: %s", ", ".join(n for n, w in walls.items() if w.get("up")) or "none")
        if down:
            log.warning("sandbox walls DOWN (--isolation strict would refuse to run): %s",
                        "; ".join(f"{n}: {d}" for n, d in down.items()))
    try:
        anyio.run(run, settings)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
