"""show_trace and its MCP Apps view: bound to a ui:// resource, rendered by a host in Chromium.

The host here is a small page that does what an MCP Apps host does (ext-apps, JSON-RPC over
postMessage): it loads the resource's HTML into an iframe, answers ``ui/initialize``, sends the
tool's input and result, and answers the view's ``tools/call`` (its Refresh button) with a later
result of the same tool, all taken from the real server through a real MCP client.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from browser import dump_dom, need_chromium
from llm_server import FakeOpenAI, serve_fake_openai
from mcp import Client
from mcp.client.extension import ClientExtension
from support import call

from rlm_mcp.config import Settings
from rlm_mcp.server import build_server
from rlm_mcp.trace.app import TRACE_APP_URI

APP_MIME = "text/html;profile=mcp-app"


class AppsHost(ClientExtension):
    """What a client with MCP Apps declares."""

    identifier = "io.modelcontextprotocol/ui"

    def settings(self) -> dict[str, Any]:
        return {"mimeTypes": [APP_MIME]}


def _wire(result: Any) -> dict[str, Any]:
    return result.model_dump(by_alias=True, exclude_none=True, mode="json")


async def test_show_trace_is_bound_to_a_ui_resource_served_as_an_mcp_app(make_client):
    async with make_client("legacy") as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "show_trace")
        assert tool.meta["ui"]["resourceUri"] == TRACE_APP_URI
        read = await client.read_resource(TRACE_APP_URI)
        (content,) = read.contents
        assert content.mime_type == APP_MIME and "ui/initialize" in content.text
        assert "http://" not in content.text and "https://" not in content.text


async def test_a_host_without_apps_gets_the_trajectory_as_text(make_client):
    async with make_client("legacy", sub_llm="host") as client:
        await call(client, "exec_python", code="x = 40 + 2\nprint(x)")
        result = await client.call_tool("show_trace", {})
        assert not result.is_error and "events" not in result.structured_content
        assert result.structured_content["totals"]["executions"] == 1
        text = result.content[0].text
        assert "1 tool calls, 1 executions" in text and "#1 exec_python" in text and "x = 40 + 2" in text
        again = (await client.call_tool("show_trace", {})).content[0].text
        assert "show_trace" not in again  # looking at the trajectory is not part of it


async def test_a_lone_surrogate_in_a_sub_query_is_replaced_not_a_crash(tmp_path: Path):
    with serve_fake_openai(FakeOpenAI()) as fake:
        server = build_server(Settings(llm_base_url=fake.url, roots=(tmp_path,)))
        async with Client(server, mode="legacy", extensions=[AppsHost()]) as client:
            await call(client, "exec_python", code="a = llm_query('odd ' + chr(0xD800))")
            result = await client.call_tool("show_trace", {})
    assert not result.is_error
    (sub,) = result.structured_content["events"][0]["sub_queries"]
    assert sub["prompt"].startswith("odd ") and "\ud800" not in sub["prompt"]


def _host_page(app_html: str, first: dict[str, Any], later: dict[str, Any]) -> str:
    script = """
var frame = document.getElementById('view'), log = [], heights = [];
var first = FIRST, later = LATER;
function send(m) { frame.contentWindow.postMessage(m, '*'); }
function seen(id) { document.getElementById(id).textContent = frame.contentDocument.body.innerText; }
window.addEventListener('message', function (e) {
  if (e.source !== frame.contentWindow) return;
  var m = e.data;
  log.push(m.method);
  document.getElementById('log').textContent = log.join(' ');
  if (m.method === 'ui/initialize') {
    send({jsonrpc: '2.0', id: m.id, result: {protocolVersion: m.params.protocolVersion,
      hostInfo: {name: 'test-host', version: '1'}, hostCapabilities: {serverTools: {}}, hostContext: {theme: 'light'}}});
  } else if (m.method === 'ui/notifications/initialized') {
    send({jsonrpc: '2.0', method: 'ui/notifications/tool-input', params: {arguments: {}}});
    send({jsonrpc: '2.0', method: 'ui/notifications/tool-result', params: first});
    setTimeout(function () {
      seen('first');
      frame.contentDocument.getElementById('refresh').click();
    }, 300);
  } else if (m.method === 'tools/call') {
    document.getElementById('asked').textContent = m.params.name;
    send({jsonrpc: '2.0', id: m.id, result: later});
    setTimeout(function () { seen('later'); }, 300);
  } else if (m.method === 'ui/notifications/size-changed') {
    heights.push(m.params.height);
    document.getElementById('heights').textContent = heights.join(' ');
  }
});
""".replace("FIRST", json.dumps(first).replace("<", "\\u003c")).replace("LATER", json.dumps(later).replace("<", "\\u003c"))
    return (f"<!DOCTYPE html><html><body><iframe id=\"view\" sandbox=\"allow-scripts allow-same-origin\" "
            f"style=\"width:1000px;height:800px\" srcdoc=\"{html.escape(app_html, quote=True)}\"></iframe>"
            "<pre id=\"first\"></pre><pre id=\"later\"></pre><pre id=\"log\"></pre><pre id=\"asked\"></pre>"
            f"<pre id=\"heights\"></pre><script>{script}</script></body></html>")


async def test_an_apps_host_renders_the_live_trajectory_and_refreshes_it(tmp_path: Path):
    need_chromium()
    with serve_fake_openai(FakeOpenAI()) as fake:
        server = build_server(Settings(llm_base_url=fake.url, roots=(tmp_path,)))
        async with Client(server, mode="legacy", extensions=[AppsHost()]) as client:
            await call(client, "exec_python", code="r = llm_query_batched(['left half', 'right half'])\nprint(r)")
            first = await client.call_tool("show_trace", {})
            assert first.structured_content["totals"]["sub_queries"] == 2
            await call(client, "exec_python", code="FINAL('live answer')")
            later = await client.call_tool("show_trace", {})
            app_html = (await client.read_resource(TRACE_APP_URI)).contents[0].text
    page = tmp_path / "host.html"
    page.write_text(_host_page(app_html, _wire(first), _wire(later)))
    dom = dump_dom(page, virtual_ms=5000)
    parts = {}
    for name in ("first", "later", "log", "asked", "heights"):
        start = dom.index(f'<pre id="{name}">') + len(f'<pre id="{name}">')
        parts[name] = html.unescape(dom[start:dom.index("</pre>", start)])
    assert parts["log"].startswith("ui/initialize ui/notifications/initialized")
    assert "2 sub-queries" in parts["first"] and "exec_python" in parts["first"]
    assert "No final answer yet." in parts["first"] and "1 tool calls" in parts["first"].replace("\n", " ")
    assert parts["asked"] == "show_trace"  # Refresh asked the host to call the tool again
    assert "live answer" in parts["later"] and "No final answer yet." not in parts["later"]
    assert parts["heights"] and all(int(h) > 100 for h in parts["heights"].split())
