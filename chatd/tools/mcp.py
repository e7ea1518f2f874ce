"""MCP servers over stdio: their tools join the registry, calls go to the server process.

A minimal client of the Model Context Protocol's stdio transport (newline-delimited JSON-RPC):
`initialize`, `notifications/initialized`, `tools/list` (paged), `tools/call`, answering the server's
`ping`. A server that exits is restarted on the next call (at most `MAX_RESTARTS` in a row); until it
is back, its calls get a clear tool error. Proven against the official `mcp` SDK in the tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from typing import Any

from chatd import __version__
from chatd.tools import Tool, ToolContext, ToolError

log = logging.getLogger("chatd.mcp")

PROTOCOL_VERSION = "2025-06-18"
MAX_RESTARTS = 3
START_TIMEOUT = 30.0


class McpServer:
    def __init__(self, name: str, command: list[str], *, env: dict[str, str] | None = None,
                 cwd: str | None = None, call_timeout: float = 120.0) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.call_timeout = call_timeout
        self.tools: list[Tool] = []
        self.error: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._restarts = 0
        self._lock = asyncio.Lock()

    @property
    def origin(self) -> str:
        return f"mcp:{self.name}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self._reader is not None \
            and not self._reader.done()

    async def start(self) -> list[Tool]:
        """Spawn, handshake and list tools. Raises ToolError with the reason when the server cannot start."""
        env = {**os.environ, **(self.env or {})}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=env, cwd=self.cwd, limit=16 * 1024 * 1024)
        except OSError as exc:
            self.error = f"cannot start MCP server {self.name!r}: {exc}"
            raise ToolError(self.error) from None
        self._reader = asyncio.ensure_future(self._read_loop())
        try:
            await asyncio.wait_for(self._request("initialize", {
                "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                "clientInfo": {"name": "chatd", "version": __version__}}), START_TIMEOUT)
            self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            self.tools = await asyncio.wait_for(self._list_tools(), START_TIMEOUT)
        except (ToolError, asyncio.TimeoutError, ConnectionError) as exc:
            await self.close()
            self.error = f"MCP server {self.name!r} failed to start: {exc or 'timed out'}"
            raise ToolError(self.error) from None
        self.error = None
        log.info("mcp server %s: %d tools", self.name, len(self.tools))
        return self.tools

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
                await asyncio.wait_for(proc.wait(), 2)
            except (asyncio.TimeoutError, ProcessLookupError, BrokenPipeError, ConnectionError):
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
        self._fail_pending("the MCP server stopped")

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        async with self._lock:
            if not self.running:
                if self._restarts >= MAX_RESTARTS:
                    raise ToolError(f"MCP server {self.name!r} crashed and was not restarted"
                                    f" after {MAX_RESTARTS} tries: {self.error or 'it exited'}")
                self._restarts += 1
                log.warning("mcp server %s is not running: restarting (try %d)", self.name, self._restarts)
                await self.start()
        try:
            result = await asyncio.wait_for(self._request("tools/call", {"name": tool, "arguments": arguments}),
                                            self.call_timeout)
        except ConnectionError as exc:
            raise ToolError(f"MCP server {self.name!r} crashed during the call: {exc}") from None
        self._restarts = 0
        return _content(result)

    async def _list_tools(self) -> list[Tool]:
        tools: list[Tool] = []
        cursor = None
        while True:
            page = await self._request("tools/list", {"cursor": cursor} if cursor else {})
            for t in page.get("tools", []):
                annotations = t.get("annotations") or {}
                tools.append(Tool(
                    name=t["name"], description=t.get("description") or "",
                    parameters=t.get("inputSchema") or {"type": "object", "properties": {}},
                    origin=self.origin, run=self._runner(t["name"]),
                    side_effects=not annotations.get("readOnlyHint", False), timeout_s=self.call_timeout))
            cursor = page.get("nextCursor")
            if not cursor:
                return tools

    def _runner(self, tool: str):
        async def run(arguments: dict[str, Any], ctx: ToolContext) -> Any:
            return await self.call(tool, arguments)

        return run

    # ------------------------------------------------------------ JSON-RPC over the pipes
    def _send(self, msg: dict[str, Any]) -> None:
        if self._proc is None or self._proc.stdin is None or self._proc.stdin.is_closing():
            raise ConnectionError("the MCP server is not running")
        self._proc.stdin.write(json.dumps(msg).encode() + b"\n")

    async def _request(self, method: str, params: dict[str, Any]) -> Any:
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
            return await future
        finally:
            self._pending.pop(msg_id, None)

    async def _read_loop(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            while line := await stdout.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("mcp server %s wrote a non-JSON line", self.name)
                    continue
                if not isinstance(msg, dict):
                    continue
                self._dispatch(msg)
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("mcp server %s: %s", self.name, exc)
        code = self._proc.returncode if self._proc else None
        self.error = f"it exited (status {code})" if code is not None else "its output closed"
        self._fail_pending(f"MCP server {self.name!r} exited")

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "method" in msg:
            if "id" in msg:  # a request to us: answer ping, refuse the rest
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": msg["id"]}
                if msg["method"] == "ping":
                    reply["result"] = {}
                else:
                    reply["error"] = {"code": -32601, "message": f"chatd does not offer {msg['method']}"}
                try:
                    self._send(reply)
                except ConnectionError:
                    pass
            elif msg["method"] == "notifications/tools/list_changed":
                asyncio.ensure_future(self._refresh())
            return
        future = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return
        if "error" in msg:
            err = msg["error"] or {}
            future.set_exception(ToolError(f"MCP server {self.name!r}: {err.get('message', 'error')}"))
        else:
            future.set_result(msg.get("result") or {})

    async def _refresh(self) -> None:
        try:
            self.tools = await self._list_tools()
        except (ToolError, ConnectionError) as exc:
            log.warning("mcp server %s: cannot refresh tools: %s", self.name, exc)

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(why))


def _content(result: dict[str, Any]) -> Any:
    """An MCP tool result as tool output: the content blocks' text (what the server meant for a model),
    else the structured content."""
    if result.get("isError"):
        raise ToolError(_text(result) or "the MCP tool reported an error")
    text = _text(result)
    if not text and result.get("structuredContent") is not None:
        return result["structuredContent"]
    return text


def _text(result: dict[str, Any]) -> str:
    parts = []
    for block in result.get("content") or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        else:
            parts.append(f"[{block.get('type')} content]")
    return "\n".join(parts)
