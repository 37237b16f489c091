"""rlm-mcp: an MCP server that turns any MCP client into a Recursive Language Model."""

__version__ = "0.1.0"

__all__ = ["__version__"]
