"""Node packages that client tests need, installed from their lockfiles.

.ci/run installs them before the suite. Elsewhere a test whose packages are missing is skipped
with the command that installs them: installing hundreds of MB inside a test run would make the
suite slow. With RLM_NPM_INSTALL=1 a test installs them itself, and is skipped with the reason
when node or npm is absent or the registry cannot be reached: an unreachable registry says nothing
about rlm-mcp. Any other npm failure (a broken lockfile) fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# What npm prints when it cannot reach the registry (DNS, refused, reset, timed out, offline).
_UNREACHABLE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENETUNREACH",
                "EHOSTUNREACH", "ERR_SOCKET_TIMEOUT", "network request", "getaddrinfo")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def ensure_installed(directory: Path, *needed: Path, timeout: float = 600) -> None:
    """Run ``npm ci`` in ``directory`` unless every path in ``needed`` exists already."""
    if all(path.exists() for path in needed):
        return
    if os.environ.get("RLM_NPM_INSTALL") != "1":
        pytest.skip(f"{directory.name}'s Node packages are not installed: run `npm ci --prefix {directory}` "
                    "(.ci/run does), or set RLM_NPM_INSTALL=1 to let the tests install them")
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip(f"node and npm are needed to install {directory.name}'s packages (npm ci in {directory})")
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=directory,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm ci in {directory} took over {timeout:g} s (a slow or unreachable registry)")
    output = done.stdout + done.stderr
    if done.returncode != 0 and any(marker in output for marker in _UNREACHABLE):
        pytest.skip(f"the npm registry cannot be reached, so {directory.name}'s packages cannot be installed "
                    f"(run npm ci in {directory} when online):\n{_tail(output, 5)}")
    assert done.returncode == 0, f"npm ci in {directory} failed:\n{_tail(output)}"
    missing = [str(path) for path in needed if not path.exists()]
    assert not missing, f"npm ci in {directory} succeeded but did not install {', '.join(missing)}"
