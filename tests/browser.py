"""Headless Chromium for tests that check what a page shows once its scripts ran.

``dump_dom`` returns the DOM after scripts ran (``--dump-dom``, with a virtual-time budget so
timers and posted messages are processed first); ``screenshot`` writes a PNG. Each run gets a
fresh profile folder, and every flag that would make Chromium reach the network is off.
Tests call ``need_chromium()`` first: without Debian's ``chromium`` they are skipped, saying how
to install it (``.ci/run`` does).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
          "--allow-file-access-from-files"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium() -> str:
    found = chromium()
    if found is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run does it)")
    return found


def _run(url: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="rlm-chromium-") as profile:
        return subprocess.run([need_chromium(), *_FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(page: Path, fragment: str = "", virtual_ms: int = 3000, timeout: float = 60) -> str:
    url = page.resolve().as_uri() + fragment
    done = _run(url, [f"--virtual-time-budget={virtual_ms}", "--dump-dom"], timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(page: Path, out: Path, fragment: str = "", size: str = "1200,900", timeout: float = 60) -> None:
    done = _run(page.resolve().as_uri() + fragment, ["--virtual-time-budget=3000", f"--window-size={size}",
                                                     f"--screenshot={out}"], timeout)
    assert done.returncode == 0 and out.exists(), done.stderr[-2000:]


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible(dom: str) -> tuple[str, list[str]]:
    """The text a reader sees (scripts and styles left out) and the tags of every element."""
    parser = _Text()
    parser.feed(dom)
    return " ".join(" ".join(parser.parts).split()), parser.tags
