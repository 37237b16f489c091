"""Trajectories: what a session did, recorded (``recorder``), read back (``format``), shown in a
browser or an MCP Apps host (``view``, ``app``) and exported to the reference RLM's log format
(``export``)."""

from .calls import bind_session, record_call
from .format import FORMAT, FORMAT_VERSION, LIMITS, Trajectory, clip, read_trace, summarize
from .recorder import Call, Tracer

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LIMITS",
    "Call",
    "Tracer",
    "Trajectory",
    "bind_session",
    "clip",
    "read_trace",
    "record_call",
    "summarize",
]
