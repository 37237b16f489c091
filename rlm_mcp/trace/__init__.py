"""Trajectories: what a session did, recorded (``recorder``), read back (``format``), shown in a
browser or an MCP Apps host (``view``, ``app``) and exported to the reference RLM's log format
(``export``).

``calls`` and ``app`` (which need the MCP SDK) are imported by the server only, so that
``rlm-mcp trace view`` starts without loading it."""

from .format import FORMAT, FORMAT_VERSION, LIMITS, Trajectory, clip, read_trace, summarize
from .recorder import Call, Tracer

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LIMITS",
    "Call",
    "Tracer",
    "Trajectory",
    "clip",
    "read_trace",
    "summarize",
]
