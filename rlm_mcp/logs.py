"""Routine events log at DEBUG: a tool error is the model's to read (it gets it as the result), and
a session that ends is normal. CLI clients show the server's stderr, so at INFO these lines mixed
into their output. The SDK logs them at INFO; a filter on its loggers moves them to DEBUG, where
``--log-level DEBUG`` still shows them."""

from __future__ import annotations

import logging

__all__ = ["quiet_routine_logs"]

# Logger -> the beginnings of its routine INFO messages (the SDK's texts, as of mcp 2.3).
_ROUTINE = {
    "mcp.server.mcpserver.server": ("Tool %r rejected arguments", "Tool %r failed", "Resource %r failed"),
    "mcp.server.streamable_http": ("Terminating session",),
    "mcp.server.streamable_http_manager": ("Created new transport with session ID", "Session ",
                                           "Rejected request with unknown or expired session ID"),
}


class _ToDebug(logging.Filter):
    def __init__(self, logger: logging.Logger, beginnings: tuple[str, ...]) -> None:
        super().__init__()
        self.logger, self.beginnings = logger, beginnings

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(self.beginnings):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.logger.isEnabledFor(logging.DEBUG)
        return True


def quiet_routine_logs() -> None:
    """Install the filters (once)."""
    for name, beginnings in _ROUTINE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ToDebug) for f in logger.filters):
            logger.addFilter(_ToDebug(logger, beginnings))
