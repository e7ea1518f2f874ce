"""Fake provider servers on 127.0.0.1 that replay the recorded wire fixtures byte for byte.

A real HTTP/1.1 server on a real socket (raw asyncio, keep-alive, chunked bodies), so requests go
through httpx's whole stack, or the official SDK's. Each request is captured (`Captured`); the reply
is scripted (`Reply`): status, headers, SSE chunks, and failure injection (drop the connection after
N chunks, stall after the chunks until the client gives up). A Chat Completions reply may also carry
its non-streamed form (`whole`), served instead when the request does not ask to stream, with the
same fault: a drop cuts the JSON body in half, a stall sends no body.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any, Callable

WIRE = pathlib.Path("/work/shared/wire")
if not WIRE.is_dir():  # CI clones the repo with shared/ beside it
    WIRE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "wire"


def fixture_text(name: str) -> str:
    return (WIRE / name).read_text()


def fixture_json(name: str) -> bytes:
    """A fixture holding one JSON document (a non-streamed reply), without the file's `#` notes."""
    return "\n".join(ln for ln in fixture_text(name).splitlines() if not ln.startswith("#")).strip().encode()


def fixture_events(name: str) -> list[bytes]:
    """The SSE events of a fixture file, each exactly as recorded (`event:`/`data:` lines and SSE
    comments), each ending with its blank line. The file's `#` notes and `[...]` elision markers are
    not part of the stream and are left out."""
    events: list[bytes] = []
    current: list[str] = []
    for line in fixture_text(name).splitlines():
        if line.startswith(("data:", "event:")):
            current.append(line)
        elif line == "" and current:
            events.append(("\n".join(current) + "\n\n").encode())
            current = []
    if current:
        events.append(("\n".join(current) + "\n\n").encode())
    return events


def data_lines(name: str) -> list[dict[str, Any]]:
    """The JSON payloads of a fixture's `data:` lines (not `[DONE]`)."""
    out = []
    for ev in fixture_events(name):
        for line in ev.decode().splitlines():
            if line.startswith("data: ") and not line.startswith("data: [DONE]"):
                out.append(json.loads(line[6:]))
    return out


def sse(obj: Any, event: str | None = None) -> bytes:
    """One SSE event in OpenAI's compact framing."""
    body = json.dumps(obj, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + b"data: " + body.encode() + b"\n\n"


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    drop_after: int | None = None  # close the socket after this many chunks, mid-body
    stall: bool = False  # after the chunks, send nothing more until the client hangs up
    whole: bytes | None = None  # the same reply non-streamed (a chat.completion JSON body)

    @classmethod
    def json(cls, status: int, body: Any, headers: dict[str, str] | None = None) -> "Reply":
        return cls(status, [json.dumps(body).encode()], {"content-type": "application/json", **(headers or {})})

    def for_request(self, req: "Captured") -> "Reply":
        """What to send for `req`: the non-streamed form, faults kept, when it did not ask to stream."""
        if self.whole is None or req.json.get("stream"):
            return self
        headers = {"content-type": "application/json"}
        if self.drop_after is not None:
            half = len(self.whole) // 2
            return Reply(self.status, [self.whole[:half], self.whole[half:]], headers, drop_after=1)
        if self.stall:
            return Reply(self.status, [], headers, stall=True)
        return Reply(self.status, [self.whole], headers)


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


class FakeServer:
    """`async with FakeServer(handler) as srv:` -> `srv.url`, `srv.requests`.

    `handler` is a Reply (same for every request), a list of Replies (one per request, in order), or a
    function of the Captured request."""

    def __init__(self, handler: Reply | list[Reply] | Callable[[Captured], Reply]) -> None:
        self.handler = handler
        self.requests: list[Captured] = []
        self._server: asyncio.base_events.Server | None = None
        self.url = ""
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> "FakeServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20, backlog=2048)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    def _reply_for(self, req: Captured) -> Reply:
        h = self.handler
        if isinstance(h, Reply):
            reply = h
        elif isinstance(h, list):
            reply = h[len(self.requests) - 1]
        else:
            reply = h(req)
        return reply.for_request(req)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = Captured(method, path, headers, body)
                self.requests.append(req)
                if not await self._respond(writer, self._reply_for(req)):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, reply: Reply) -> bool:
        head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        head.append("transfer-encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for i, chunk in enumerate(reply.chunks):
            if reply.drop_after is not None and i >= reply.drop_after:
                await writer.drain()
                writer.transport.abort()
                return False
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        if reply.stall:
            await writer.drain()
            await asyncio.Event().wait()  # until the client disconnects and the server closes us
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def split(data: bytes, size: int) -> list[bytes]:
    """Re-chunk a byte stream into pieces of `size` (to cut SSE lines, and UTF-8, anywhere)."""
    return [data[i:i + size] for i in range(0, len(data), size)]
