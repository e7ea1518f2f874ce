"""chatd's MCP client against a server built with the official `mcp` SDK, over real stdio pipes."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from chatd.tools import ToolContext, ToolError
from chatd.tools.mcp import McpServer

SERVER = [sys.executable, os.path.join(os.path.dirname(__file__), "mcp_server.py")]
CTX = ToolContext(conversation="c", turn_id="t", call_id="1")


def test_lists_and_calls_tools_and_restarts_after_a_crash():
    async def main():
        server = McpServer("test", SERVER)
        tools = {t.name: t for t in await server.start()}
        try:
            assert {"reverse", "add", "fail", "crash", "write_note"} <= set(tools)
            assert tools["reverse"].origin == "mcp:test" and not tools["reverse"].side_effects
            assert tools["write_note"].side_effects  # no readOnlyHint: asks before running
            assert tools["add"].parameters["properties"]["a"]["type"] == "integer"
            assert await tools["reverse"].run({"text": "chatd"}, CTX) == "dtahc"
            added = await tools["add"].run({"a": 2, "b": 40}, CTX)
            assert added == "42"
            with pytest.raises(ToolError, match="tool fail"):  # the SDK hides the exception text
                await tools["fail"].run({"why": "nope"}, CTX)
            with pytest.raises(ToolError, match="crashed during the call"):
                await tools["crash"].run({}, CTX)
            assert not server.running
            # the next call restarts the server
            assert await tools["reverse"].run({"text": "back"}, CTX) == "kcab"
            assert server.running
        finally:
            await server.close()

    asyncio.run(main())


def test_a_server_that_cannot_start_is_reported():
    async def main():
        server = McpServer("broken", [sys.executable, "-c", "import sys; sys.exit(2)"])
        with pytest.raises(ToolError, match="broken"):
            await server.start()
        missing = McpServer("missing", ["/nonexistent/mcp-server"])
        with pytest.raises(ToolError, match="cannot start"):
            await missing.start()

    asyncio.run(main())
