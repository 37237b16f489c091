"""Shared fixtures: servers built in-process, the installed command, free loopback ports."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.config import Settings
from rlm_mcp.server import build_server

BIN = Path(sys.executable).parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rlm_mcp_command() -> str:
    """The installed console script, next to this interpreter."""
    return str(BIN / "rlm-mcp")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes only once reaped; report it as alive so tests catch leaks.
    return True


@pytest.fixture
def make_client(tmp_path: Path) -> Callable[..., Any]:
    """``async with make_client(mode="legacy", **settings) as client`` over an in-memory server."""

    @asynccontextmanager
    async def factory(mode: str = "legacy", **overrides: Any) -> AsyncIterator[Client]:
        callback = overrides.pop("sampling_callback", None)
        overrides.setdefault("roots", (tmp_path,))
        overrides.setdefault("exec_timeout", 20.0)
        server = build_server(Settings(**overrides))
        async with Client(server, mode=mode, sampling_callback=callback) as client:
            client.rlm_server = server  # type: ignore[attr-defined]
            yield client

    return factory
