"""JSON-RPC connections to the daemon's socket: `Client` (blocking, here) and `AsyncClient` (asyncio,
in `chatd_client.aio`, also reachable from here). Both frame with LSP `Content-Length` headers, as
editors do (`chatd.wire`). The blocking client, what one-shot commands use, codes JSON with the standard
library's C codec (`chatd.stdjson`) on a bare `_socket`, so `chatd call` and `chatd send` start without
importing msgspec, `json` (and its `re`) or `socket` (and its `enum` and `selectors`); the asyncio
client shares `chatd.protocol`'s msgspec codec.
"""

from __future__ import annotations

import _socket
import itertools
from _collections import deque  # collections.deque itself, without importing `collections`

from chatd import stdjson, wire

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs a one-shot command ~3 ms
    from typing import Any, Callable


class RpcError(Exception):
    """A JSON-RPC error reply: `code`, `message` and optional `data`."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} ({code})")
        self.code, self.message, self.data = code, message, data

    @property
    def cancelled(self) -> bool:
        return self.code == wire.REQUEST_CANCELLED


def _result(msg: dict[str, Any]) -> Any:
    if "error" in msg:
        err = msg["error"] or {}
        raise RpcError(err.get("code", wire.INTERNAL_ERROR), err.get("message", ""), err.get("data"))
    return msg.get("result")


class Client:
    """A blocking client: one request at a time; notifications that arrive meanwhile are queued."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._decoder = wire.FrameDecoder(lsp_only=True)
        self._frames: deque[bytes] = deque()
        self._ids = itertools.count(1)
        self.notifications: deque[dict[str, Any]] = deque()
        self.on_notification: Callable[[str, Any], None] | None = None

    def request(self, method: str, params: Any = None) -> Any:
        return self.wait(self.send_request(method, params))

    def send_request(self, method: str, params: Any = None) -> int:
        msg_id = next(self._ids)
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    def wait(self, msg_id: int) -> Any:
        """Read until the reply to `msg_id`; notifications meanwhile go to `on_notification` or the queue."""
        while True:
            msg = self.read_message()
            if msg.get("id") == msg_id and "method" not in msg:
                return _result(msg)

    def notify(self, method: str, params: Any = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def read_message(self) -> dict[str, Any]:
        """The next message from the daemon; notifications also go to `on_notification` or the queue."""
        while not self._frames:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            for item in self._decoder.feed(data):
                if type(item) is bytes:
                    self._frames.append(item)
        msg = stdjson.loads(self._frames.popleft())
        if "method" in msg and "id" not in msg:
            if self.on_notification is not None:
                self.on_notification(msg["method"], msg.get("params"))
            else:
                self.notifications.append(msg)
        return msg

    def _send(self, msg: dict[str, Any]) -> None:
        self._sock.sendall(wire.frame_lsp(_encode(msg)))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def __getattr__(name: str):
    # AsyncClient lives in chatd_client.aio: a one-shot `chatd call` should not pay for importing asyncio.
    if name == "AsyncClient":
        from chatd_client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'chatd_client.connection' has no attribute {name!r}")


def _builtins(value: Any) -> Any:
    """A msgspec Struct (a `chatd.protocol` params object) given as params: its JSON form."""
    import msgspec

    return msgspec.to_builtins(value)


def _encode(msg: dict[str, Any]) -> bytes:
    return stdjson.dumps(msg, default=_builtins).encode()
