"""The client tests skip, not fail, when their Node packages cannot be installed for want of a
registry; a broken install still fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import free_port
from npm_packages import ensure_installed

LOCK = {
    "name": "probe", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
    "packages": {
        "": {"name": "probe", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}},
        "node_modules/left-pad": {
            "version": "1.3.0",
            "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
            "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEgbMWkH4rCr66ZYmrdqHsyKGt4CoBINm1Pp2oUPtO2HoLGA==",
        },
    },
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed")
    # A registry on a loopback port where nothing listens: npm meets "connection refused", as it
    # would offline, and no traffic leaves the machine.
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{free_port()}/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")  # refused is final: no back-off to wait through
    monkeypatch.setenv("RLM_NPM_INSTALL", "1")
    directory = tmp_path / "probe"
    directory.mkdir()
    (directory / "package.json").write_text(json.dumps({"name": "probe", "version": "1.0.0",
                                                        "dependencies": {"left-pad": "1.3.0"}}))
    (directory / "package-lock.json").write_text(json.dumps(LOCK))
    return directory


def test_an_unreachable_registry_skips_with_the_reason(project: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match="registry cannot be reached"):
        ensure_installed(project, project / "node_modules" / "left-pad" / "index.js", timeout=120)


def test_packages_already_there_need_no_registry(project: Path) -> None:
    marker = project / "node_modules" / "left-pad" / "index.js"
    marker.parent.mkdir(parents=True)
    marker.write_text("module.exports = 1;\n")
    ensure_installed(project, marker, timeout=120)  # neither skips nor fails


def test_a_broken_lockfile_fails_rather_than_skips(project: Path) -> None:
    (project / "package-lock.json").write_text("{ not json")
    with pytest.raises(AssertionError, match="npm ci in"):
        ensure_installed(project, project / "node_modules" / "left-pad" / "index.js", timeout=120)


def test_missing_packages_skip_with_the_install_command_unless_asked_to_install(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLM_NPM_INSTALL")
    (project / "package-lock.json").write_text("{ not json")  # npm would fail: it must not run
    with pytest.raises(pytest.skip.Exception, match="npm ci --prefix"):
        ensure_installed(project, project / "node_modules" / "left-pad" / "index.js", timeout=120)
