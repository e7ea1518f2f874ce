"""One connection to the daemon per event loop, as `LLMClient` uses it: tools this process runs, and
what the daemon committed for each turn.

The daemon keeps client tools per connection, so the session that sends a turn is the one that
registered its tools and answers `tool/invoke` by running the Python function here. It also keeps
`conversation/changed` (kind "turn") notifications, which arrive before the `chat/send` reply and carry
every message the turn committed (tool calls and results included), so no extra `conversation/get`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

from chatd import protocol as p
from chatd_client.aio import AsyncClient
from chatd_client.tool import Tool, result_for_wire


class Session:
    def __init__(self, rpc: AsyncClient, methods: set[str]) -> None:
        self.rpc = rpc
        self.loop = asyncio.get_running_loop()
        self.methods = methods  # what this daemon serves (feature detection, e.g. chat/batch)
        self.tools: dict[str, Tool] = {}
        self._committed: dict[tuple[str, int], list[dict[str, Any]]] = {}  # (conversation, last seq) -> messages
        rpc.request_handlers[p.TOOL_INVOKE] = self._invoke
        rpc.on_notification = self._on_notification
        _OPEN.add(self)

    @classmethod
    async def open(cls, socket: str) -> "Session":
        rpc = await AsyncClient.connect(socket)
        try:
            init = await rpc.request(p.INITIALIZE, {"clientInfo": {"name": "chatd_client"}, "processId": os.getpid()})
        except BaseException:
            await rpc.close()
            raise
        return cls(rpc, set((init or {}).get("capabilities", {}).get("methods", ())))

    @property
    def alive(self) -> bool:
        return not self.rpc._task.done()

    async def request(self, method: str, params: Any = None) -> Any:
        return await self.rpc.request(method, params)

    async def register(self, tools: list[Tool]) -> None:
        """Register the tools this connection has not registered yet (or registered as other tools)."""
        new = [t for t in tools if self.tools.get(t.name) is not t]
        if new:
            await self.rpc.request(p.TOOLS_REGISTER, {"tools": [t.declaration() for t in new]})
            self.tools.update((t.name, t) for t in new)

    def committed(self, conversation: str, seq: int) -> list[dict[str, Any]] | None:
        """The messages of the turn that committed `seq` in `conversation` (announced before the reply)."""
        return self._committed.pop((conversation, seq), None)

    def _on_notification(self, method: str, params: Any) -> None:
        if method == p.CONVERSATION_CHANGED and params and params.get("kind") == "turn":
            self._committed[(params["name"], params["seq"])] = params.get("messages") or []
            if len(self._committed) > 256:  # turns of conversations we follow but did not send
                self._committed.pop(next(iter(self._committed)))

    async def _invoke(self, params: Any) -> Any:
        tool = self.tools.get(params["tool"])
        if tool is None:
            raise LookupError(f"this client has no tool named {params['tool']!r}")
        return result_for_wire(await tool.acall(**(params.get("arguments") or {})))

    async def close(self) -> None:
        await self.rpc.close()
        try:
            await self.rpc._task  # let the reader unwind, so no task is left pending on a closing loop
        except (asyncio.CancelledError, Exception):
            pass


_OPEN: "weakref.WeakSet[Session]" = weakref.WeakSet()


async def _close_sessions(loop: asyncio.AbstractEventLoop) -> None:
    for session in [s for s in list(_OPEN) if s.loop is loop]:
        await session.close()


class LoopThread:
    """A private event loop on a daemon thread, for the sync API: works whether or not the calling
    thread already runs a loop (a notebook), and keeps one connection across sync calls. `stop()` (also
    called when its client is garbage) closes the loop's connections first, so no task is left pending."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chatd_client", daemon=True)
        self._thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if threading.current_thread() is self._thread:  # dropped by code running on the loop itself
            self.loop.call_soon(self.loop.stop)
            return
        if self.loop.is_running():
            try:
                self.run(_close_sessions(self.loop))
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()
