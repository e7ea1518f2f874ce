"""A small MCP server for the tests, written with the official `mcp` SDK (stdio transport).

Tools: `reverse` (read-only), `add` (structured output), `fail` (reports an error), `crash` (exits the
process mid-call, to test restart).
"""

import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("chatd-test")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def reverse(text: str) -> str:
    """Reverse a string."""
    return text[::-1]


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def fail(why: str) -> str:
    """Always fails."""
    raise ValueError(why)


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def crash() -> str:
    """Exit the server process abruptly."""
    os._exit(3)


@server.tool()
def write_note(text: str) -> str:
    """Pretend to write a note (side-effecting: no readOnlyHint)."""
    return f"noted: {text}"


if __name__ == "__main__":
    server.run("stdio")
    sys.exit(0)
