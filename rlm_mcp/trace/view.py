"""One self-contained HTML page for a trajectory, and the MCP Apps page for the live one.

Both carry the same renderer (``assets/viewer.js``, ``viewer.css``) inline; the page also
carries its data, the app gets its data from the host. A Content-Security-Policy of
``default-src 'none'`` (inline script and style only) means the page cannot reach the network
even if a text in the trace tried to make it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from .format import Trajectory
from .recorder import add_to_totals, new_totals

__all__ = ["render_page", "app_page", "page_data"]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


@cache
def _asset(name: str) -> str:
    return files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    # Inside <script>, "</script>" or "<!--" in a text would end or confuse the element: no "<" at all.
    return json.dumps(data, ensure_ascii=False, default=str).replace("<", "\\u003c")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def page_data(trajectory: Trajectory) -> dict[str, Any]:
    totals = new_totals()
    for event in trajectory.events:
        add_to_totals(totals, event)
    return {"header": trajectory.header, "totals": totals, "events": trajectory.events,
            "skipped_lines": trajectory.skipped}


def _page(title: str, body: str, script: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_escape(title)}</title><style>{_asset('viewer.css')}</style></head>\n"
        f"<body>{body}\n<script>{_asset('viewer.js')}</script>\n<script>{script}</script>\n</body></html>\n"
    )


def render_page(trajectory: Trajectory, title: str = "rlm-mcp trajectory") -> str:
    """The whole trajectory as one HTML page that needs nothing but a browser."""
    body = (f"<div id=\"root\">Rendering…</div>"
            f"<script id=\"trace-data\" type=\"application/json\">{_script_json(page_data(trajectory))}</script>")
    script = (
        "var data = JSON.parse(document.getElementById('trace-data').textContent);"
        f"function draw() {{ RlmTrace.render(document.getElementById('root'), data, "
        f"{{title: {_script_json(title)}, hash: location.hash}}); }}"
        "draw(); window.addEventListener('hashchange', draw);"
    )
    return _page(title, body, script)


def app_page() -> str:
    """The ``ui://`` resource: renders what the host passes from ``show_trace``, refreshes on demand."""
    body = ("<div style=\"padding:6px 16px\"><button id=\"refresh\" class=\"more\">Refresh</button> "
            "<span id=\"status\" class=\"meta\">connecting to the host…</span></div><div id=\"app\"></div>")
    return _page("rlm-mcp trajectory", body, _asset("app.js"))
