"""Arguments of the wrong type: a short error that names the argument and what it must be.

The SDK answers them with pydantic's own text ("1 validation error for peekArguments ... For
further information visit https://errors.pydantic.dev/..."), which a model reads as noise. The
tool's input schema already says what each argument must be; the error says it from there.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import ValidationError

__all__ = ["RlmServer", "argument_error"]

_TYPES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
          "object": "an object", "array": "a list", "null": "null"}


class RlmServer(MCPServer):
    """MCPServer whose argument errors are short and say how to fix the call."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
                        ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                raise
            schema = next((t.input_schema for t in await self.list_tools() if t.name == name), {})
            # From the ValidationError, so the SDK's log still names the fields only.
            raise ToolError(argument_error(name, cause, schema, arguments)) from cause


def argument_error(tool: str, exc: ValidationError, schema: dict[str, Any], arguments: dict[str, Any]) -> str:
    """One sentence per wrong argument: ``peek: start must be an integer, not the string 'abc'.``"""
    properties = schema.get("properties", {})
    sentences: list[str] = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        name = str(loc[0]) if loc else "arguments"
        if any(s.startswith(f"{name} ") for s in sentences):
            continue  # a union reports each arm; one sentence per argument is enough
        expected = _expected(properties.get(name, {}), schema.get("$defs", {}))
        if error.get("type") == "missing":
            sentences.append(f"{name} is required ({expected}).")
        else:
            value = error.get("input") if len(loc) == 1 else arguments.get(name)
            sentences.append(f"{name} must be {expected}, not {_shown(value)}.")
    return f"Invalid arguments for {tool}: " + " ".join(sentences)


def _expected(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        prop = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
    if "enum" in prop:
        return "one of " + ", ".join(repr(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_expected(arm, defs) for arm in prop["anyOf"])
    kind = prop.get("type")
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"an object, each value {_expected(prop['additionalProperties'], defs)}"
    if kind == "object" and "properties" in prop:
        return "an object {" + ", ".join(f'"{k}": {_expected(v, defs)}' for k, v in prop["properties"].items()) + "}"
    if kind == "array" and "items" in prop:
        return f"a list, each item {_expected(prop['items'], defs)}"
    return _TYPES.get(str(kind), "a value of the type its description gives")


def _shown(value: Any) -> str:
    kind = {str: "the string", bool: "the boolean", int: "the integer", float: "the number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    if value is None or isinstance(value, list | dict):
        return kind
    text = repr(value)
    return f"{kind} {text[:60] + '...' if len(text) > 60 else text}"
