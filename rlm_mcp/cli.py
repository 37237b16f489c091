"""``rlm-mcp``: serve stdio by default, or streamable HTTP with ``--http``. Logs go to stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import anyio

from sandbox import sweep_stale

from .config import Settings, settings_from_args
from .server import build_server

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
    mcp = build_server(settings)
    if settings.transport == "stdio":
        await mcp.run_stdio_async()
        return
    import uvicorn

    from .http import build_http_app

    app = build_http_app(mcp, settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            lifespan="on")
    server = uvicorn.Server(config)
    logging.getLogger(__name__).info("rlm-mcp serving streamable HTTP on http://%s:%d/mcp", settings.host,
                                     settings.port)
    await server.serve()


def main(argv: Sequence[str] | None = None) -> None:
    settings = settings_from_args(argv)
    _configure_logging(settings)
    for folder in sweep_stale():
        logging.getLogger(__name__).info("removed %s, left behind by a server that was killed", folder)
    try:
        anyio.run(run, settings)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
