"""`rlm-mcp trace view`: one offline HTML page, checked in headless Chromium after its scripts ran."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser import dump_dom, need_chromium, visible
from conftest import rlm_mcp_command
from llm_server import FakeOpenAI, serve_fake_openai
from support import call

from rlm_mcp.trace import read_trace
from rlm_mcp.trace.view import render_page


async def _recorded_session(make_client, folder: Path) -> Path:
    with serve_fake_openai(FakeOpenAI()) as fake:
        async with make_client("legacy", llm_base_url=fake.url, trace_dir=folder) as client:
            await call(client, "load_context", text="alpha\nbeta\n" * 50)
            await call(client, "peek", start=0, end=11)
            await call(client, "exec_python", code="r = llm_query_batched(['first prompt', 'second prompt'])\nprint(r)")
            await client.call_tool("exec_python", {"code": "1/0"})
            await call(client, "exec_python", code="FINAL('forty-two')")
    (path,) = folder.glob("*.jsonl")
    return path


def _view(trace: Path, out: Path) -> None:
    done = subprocess.run([rlm_mcp_command(), "trace", "view", str(trace), "-o", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o077 == 0  # the page holds the trace's data: private like it


async def test_the_page_shows_steps_totals_and_the_final_answer(make_client, tmp_path: Path):
    need_chromium()
    trace = await _recorded_session(make_client, tmp_path / "traces")
    page = tmp_path / "session.html"
    _view(trace, page)
    text, _ = visible(dump_dom(page, fragment="#step-3"))  # the link opens call 3
    for shown in ("load_context", "peek", "exec_python", "FINAL", "forty-two", "2 sub-queries",
                  "5 tool calls", "3 executions", "2 sub-queries", "30 sub-query tokens", "1 errors",
                  "r = llm_query_batched(['first prompt', 'second prompt'])",
                  "['ANSWER[first prompt]', 'ANSWER[second prompt]']", "Sub-queries (2)"):
        assert shown in text, (shown, text)
    # A sub-query's body, and a closed step's, are built only when opened.
    assert "prompt (" not in text and "answer (" not in text  # the labels of a sub-query's body
    assert "ZeroDivisionError" not in text and "1/0" in text


def test_texts_in_the_trace_are_shown_as_text_and_reach_no_network(tmp_path: Path):
    """Model output that looks like markup stays text; the page asks nothing of any server."""
    need_chromium()
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        evil = (f"<img src=\"{base}/img\"><script>fetch('{base}/fetch')</script></script>"
                f"<link rel=stylesheet href=\"{base}/css\">")
        trace = tmp_path / "t.jsonl"
        events = [{"type": "header", "format": "rlm-mcp-trace", "ts": 1.0, "session": "s"},
                  {"type": "exec_python", "call": 1, "ts": 1.0, "seconds": 0.1, "arguments": {"code": evil},
                   "result": {"status": "ok", "stdout": evil, "final": evil},
                   "sub_queries": [{"backend": "provider", "prompt": evil, "answer": evil, "seconds": 0.1,
                                    "tokens": {"prompt": 1, "answer": 1}}]}]
        trace.write_text("\n".join(json.dumps(e) for e in events) + "\n")
        page = tmp_path / "t.html"
        page.write_text(render_page(read_trace(trace)))
        dom = dump_dom(page, fragment="#step-1")
        text, tags = visible(dom)
        assert f"<img src=\"{base}/img\">" in text  # shown literally, as the model wrote it
        assert "img" not in tags and "link" not in tags
        time.sleep(0.2)
        assert hits == []
    finally:
        server.shutdown()
        server.server_close()


def _big_trace(path: Path, steps: int, subs_per_exec: int) -> None:
    with path.open("w") as f:
        f.write(json.dumps({"type": "header", "format": "rlm-mcp-trace", "ts": 1000.0, "session": "big"}) + "\n")
        for i in range(1, steps + 1):
            event = {"type": "exec_python", "call": i, "ts": 1000.0 + i, "seconds": 0.5,
                     "arguments": {"code": f"print({i})"}, "result": {"status": "ok", "stdout": f"{i}\n"}}
            if i == 1:
                event["sub_queries"] = [{"backend": "provider", "prompt": f"chunk prompt {j}", "answer": f"answer {j}",
                                         "seconds": 0.2, "tokens": {"prompt": 100, "answer": 10}}
                                        for j in range(subs_per_exec)]
            f.write(json.dumps(event) + "\n")


@pytest.mark.parametrize("steps,subs", [(2_000, 5_000)])
def test_thousands_of_sub_queries_open_fast_because_they_render_lazily(tmp_path: Path, steps: int, subs: int):
    need_chromium()
    trace, page = tmp_path / "big.jsonl", tmp_path / "big.html"
    _big_trace(trace, steps, subs)
    started = time.monotonic()
    html = render_page(read_trace(trace))
    assert time.monotonic() - started < 5
    # A reader clicks call 250's bar on the timeline: its step is past the first page of steps.
    click = "<script>document.querySelector('#timeline i[title^=\"#250 \"]').click();</script>"
    page.write_text(html.replace("</body>", click + "</body>"))
    started = time.monotonic()
    text, tags = visible(dump_dom(page, fragment="#step-1"))
    seconds = time.monotonic() - started
    assert f"{subs:,} sub-queries" in text and "2,000 tool calls" in text
    # Call 1 is open: the first page of its sub-queries' rows is built, with a button for the rest;
    # no sub-query's prompt and answer are (those come when one is opened).
    assert "#100 provider" in text and "#101 provider" not in text and "answer 0" not in text
    assert "Show 100 more (4,900 left)" in text
    # The steps come 200 at a time too, closed; the click built the next page and opened call 250.
    assert "Show 200 more (1,600 left)" in text and "print(400)" in text and "print(401)" not in text
    assert "output 250" in text and "output 249" not in text
    assert len(tags) < 10_000
    # The browser's start dominates; a page that built everything would take far longer.
    assert seconds < 30, seconds
