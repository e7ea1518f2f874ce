"""The asyncio connection to the daemon: many requests in flight, notifications, and handlers for the
daemon's requests to this client (`tool/invoke`, `tool/approve`)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Awaitable, Callable

from chatd import protocol as p
from chatd_client.connection import RpcError, _result

__all__ = ["AsyncClient", "RpcError"]


class AsyncClient:
    """An asyncio client: many requests in flight, notifications to a queue or a callback, and
    handlers for the daemon's requests to us (`tool/invoke`, `tool/approve`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.notifications: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.on_notification: Callable[[str, Any], None] | None = None
        self.request_handlers: dict[str, Callable[[Any], Awaitable[Any]]] = {}
        self._task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def connect(cls, path: str) -> "AsyncClient":
        reader, writer = await asyncio.open_unix_connection(path, limit=p.MAX_FRAME)
        return cls(reader, writer)

    async def request(self, method: str, params: Any = None) -> Any:
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        try:
            return _result(await asyncio.shield(future))
        except asyncio.CancelledError:
            if not future.done():
                self.notify(p.CANCEL_REQUEST, {"id": msg_id})
            raise
        finally:
            self._pending.pop(msg_id, None)

    def start_request(self, method: str, params: Any = None) -> tuple[int, "asyncio.Future[Any]"]:
        """Send a request and return its id and a future of the raw reply (for cancel tests and tools)."""
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id, future

    def notify(self, method: str, params: Any = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def _send(self, msg: Any) -> None:
        self._writer.write(p.frame_lsp(p.encode(msg)))

    async def _read_loop(self) -> None:
        decoder = p.FrameDecoder(lsp_only=True)
        try:
            while data := await self._reader.read(65536):
                for body in decoder.feed(data):
                    if type(body) is bytes:
                        self._dispatch(p.decode(body))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("the daemon closed the connection"))
                    future.exception()  # retrieved: a caller that never awaits it gets no warning
            self.notifications.put_nowait(("$/closed", None))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "method" not in msg:
            future = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(msg)
        elif "id" in msg:
            asyncio.ensure_future(self._answer(msg))
        elif self.on_notification is not None:
            self.on_notification(msg["method"], msg.get("params"))
        else:
            self.notifications.put_nowait((msg["method"], msg.get("params")))

    async def _answer(self, msg: dict[str, Any]) -> None:
        handler = self.request_handlers.get(msg["method"])
        if handler is None:
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": msg["id"],
                                     "error": {"code": p.METHOD_NOT_FOUND, "message": "not handled by this client"}}
        else:
            try:
                reply = {"jsonrpc": "2.0", "id": msg["id"], "result": await handler(msg.get("params"))}
            except Exception as exc:
                reply = {"jsonrpc": "2.0", "id": msg["id"],
                         "error": {"code": p.INTERNAL_ERROR, "message": f"{type(exc).__name__}: {exc}"}}
        self._send(reply)

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:  # the daemon may have closed first (reset, broken pipe)
            pass
        self._task.cancel()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
