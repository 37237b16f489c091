"""The server side of the sandbox's walls: --isolation, --bwrap, the start-up check, rlm_status."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import rlm_mcp_command
from sandbox import walls
from support import bubblewrap_namespaces, call

BWRAP = walls.find_bwrap()


NAMESPACES = bubblewrap_namespaces(BWRAP)


def test_strict_isolation_without_bubblewrap_refuses_to_start(tmp_path: Path) -> None:
    """`--isolation strict` with no usable bubblewrap exits with status 2 and one line that says why."""
    done = subprocess.run([rlm_mcp_command(), "--isolation", "strict", "--bwrap", str(tmp_path / "no-bwrap")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rlm-mcp: --isolation strict:") and "bubblewrap" in last, done.stderr


def test_auto_isolation_without_bubblewrap_runs_and_says_which_walls_are_down(tmp_path: Path) -> None:
    """`--isolation auto` without bubblewrap still serves, and logs the walls that are down."""
    request = ('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
               '"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\n')
    done = subprocess.run([rlm_mcp_command(), "--bwrap", str(tmp_path / "no-bwrap")], input=request,
                          capture_output=True, text=True, timeout=60)
    assert '"serverInfo"' in done.stdout
    assert "sandbox walls DOWN" in done.stderr and "pid_namespace" in done.stderr
    assert "seccomp" in done.stderr.split("sandbox walls up:", 1)[1].splitlines()[0]


def test_bad_isolation_values_are_refused() -> None:
    done = subprocess.run([rlm_mcp_command(), "--isolation", "loose"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--isolation must be auto, strict or off" in done.stderr


@pytest.mark.skipif(not NAMESPACES, reason="this machine gives no user namespaces to bubblewrap")
async def test_rlm_status_shows_every_wall_up(make_client) -> None:
    """Once the worker runs, rlm_status lists each wall as the worker saw it from inside."""
    async with make_client() as client:
        before = await call(client, "rlm_status")
        assert isinstance(before["isolation"]["walls"], str)  # not started yet: nothing claimed
        await call(client, "exec_python", code="x = 1")
        status = await call(client, "rlm_status")
    assert status["isolation"]["mode"] == "auto"
    assert set(status["isolation"]["walls"]) == set(walls.WALLS)
    assert all(state == "up" for state in status["isolation"]["walls"].values())


async def test_rlm_status_names_the_walls_that_are_down(make_client, tmp_path: Path) -> None:
    async with make_client(bwrap=str(tmp_path / "no-bwrap")) as client:
        await call(client, "exec_python", code="x = 1")
        shown = (await call(client, "rlm_status"))["isolation"]["walls"]
    assert shown["pid_namespace"].startswith("DOWN:") and shown["seccomp"] == "up"
