"""chatd's httpx transport over aiohttp (providers/aiohttp_transport.py), against a raw asyncio HTTP/1.1
server on 127.0.0.1: what it sends, how it pools, and which httpx error each failure becomes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from chatd.providers.aiohttp_transport import AiohttpTransport


class Server:
    """Answers each request on a connection by `how`: "whole" (a 10-byte body), "half" (5 of its 10 bytes,
    then waits for the client to hang up), "stall" (headers, then nothing), "drop" (5 bytes, then closes)
    or "paced" (its 10 bytes one at a time, each when `more()` is called)."""

    def __init__(self, *hows: str, gate: int = 0) -> None:
        self.hows = list(hows)
        self.connections = 0
        self.open = 0
        self.requests: list[bytes] = []
        self.hung_up = asyncio.Event()
        self.changed = asyncio.Condition()
        self.gate = gate  # answer nothing until this many requests have arrived (they are all in flight)
        self._more: asyncio.Queue[None] = asyncio.Queue()

    def more(self) -> None:
        """A paced reply: send its next byte."""
        self._more.put_nowait(None)

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/x?alt=sse"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                async with self.changed:
                    self.changed.notify_all()
                    await self.changed.wait_for(lambda: len(self.requests) >= self.gate)
                how = self.hows.pop(0)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\n")
                if how == "whole":
                    writer.write(b"0123456789")
                elif how in ("half", "drop"):
                    writer.write(b"01234")
                elif how == "paced":
                    for byte in b"0123456789":
                        await self._more.get()
                        writer.write(bytes([byte]))
                        await writer.drain()
                await writer.drain()
                if how == "drop":
                    return
                if how in ("half", "stall"):
                    if await reader.read() == b"":
                        self.hung_up.set()
                    return
        finally:
            writer.close()
            self.open -= 1
            async with self.changed:
                self.changed.notify_all()


def _client(read: float = 10.0, limits: httpx.Limits = httpx.Limits(max_connections=None)) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AiohttpTransport(limits), timeout=httpx.Timeout(read, connect=5.0))


def test_sends_httpx_headers_and_body_and_reuses_a_finished_connection():
    async def main():
        async with Server("whole", "whole") as srv, _client() as http:
            first = await http.post(srv.url, content=b'{"a": 1}', headers={"Authorization": "Bearer k"})
            second = await http.post(srv.url, content=b"{}")
            return srv, first, second
    srv, first, second = asyncio.run(main())
    assert (first.status_code, first.content, second.content) == (200, b"0123456789", b"0123456789")
    assert first.headers["content-type"] == "text/plain" and first.http_version == "HTTP/1.1"
    head, _, body = srv.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x?alt=sse HTTP/1.1" and body == b'{"a": 1}'
    assert b"Authorization: Bearer k" in lines and b"Content-Length: 8" in lines
    assert sum(line.lower().startswith(b"host:") for line in lines) == 1  # httpx's Host, not a second one
    assert srv.connections == 1


def test_idle_connections_beyond_max_keepalive_are_closed_and_the_rest_reused():
    """Five requests in flight at once open five connections; once they are done, two stay (the cap), the
    other three are closed by the client, and the next two requests reuse the two."""
    async def main():
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=2, keepalive_expiry=60)
        async with Server(*["whole"] * 7, gate=5) as srv, _client(limits=limits) as http:
            replies = await asyncio.gather(*(http.post(srv.url, content=b"{}") for _ in range(5)))
            async with srv.changed:
                await asyncio.wait_for(srv.changed.wait_for(lambda: srv.open == 2), 10)
            replies += await asyncio.gather(*(http.post(srv.url, content=b"{}") for _ in range(2)))
            return srv, replies
    srv, replies = asyncio.run(main())
    assert [r.content for r in replies] == [b"0123456789"] * 7
    assert srv.connections == 5 and srv.open == 0


def test_a_reply_closed_half_read_closes_its_connection_instead_of_reusing_it():
    async def main():
        async with Server("half", "whole") as srv, _client() as http:
            async with http.stream("POST", srv.url, content=b"{}") as resp:
                async for chunk in resp.aiter_raw():
                    assert chunk == b"01234"
                    break
            await asyncio.wait_for(srv.hung_up.wait(), 10)
            again = await http.post(srv.url, content=b"{}")
            return srv, again
    srv, again = asyncio.run(main())
    assert again.content == b"0123456789" and srv.connections == 2


def test_a_refused_connect_is_a_connect_error_not_a_timeout():
    async def main():
        async with Server() as srv:
            url = srv.url
        async with _client() as http:
            await http.post(url, content=b"{}")
    with pytest.raises(httpx.ConnectError) as info:
        asyncio.run(main())
    assert not isinstance(info.value, httpx.TimeoutException)


@pytest.mark.parametrize("how", ["stall", "half"])
def test_a_silent_server_is_a_read_timeout(how):
    """Silent after the headers, or after part of the body: the read timeout is a gap between reads, its
    timer moved lazily (`_Reader`)."""
    async def main():
        async with Server(how) as srv, _client(read=0.2) as http:
            async with http.stream("POST", srv.url, content=b"{}") as resp:
                await resp.aread()
    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(main())


def test_a_streamed_reply_sets_one_read_timer_not_one_a_chunk():
    """aiohttp itself cancels its read-timeout timer and makes a new one for every chunk it receives;
    chatd's connections keep one for the whole reply (here ten reads, each one byte)."""
    async def main():
        loop = asyncio.get_running_loop()
        timers: list[str] = []
        call_at = loop.call_at

        def counting(when, callback, *args, **kwargs):
            if getattr(callback, "__name__", "") in ("_when_due", "_on_read_timeout"):
                timers.append(callback.__name__)
            return call_at(when, callback, *args, **kwargs)

        loop.call_at = counting  # type: ignore[method-assign]
        async with Server("paced") as srv, _client() as http:
            async with http.stream("POST", srv.url, content=b"{}") as resp:
                srv.more()
                chunks = []
                async for chunk in resp.aiter_raw():
                    chunks.append(chunk)
                    srv.more()
        return chunks, timers

    chunks, timers = asyncio.run(main())
    assert chunks == [bytes([b]) for b in b"0123456789"]
    assert timers == ["_when_due"], timers


def test_a_reply_cut_short_is_a_transport_error_not_a_timeout():
    async def main():
        async with Server("drop") as srv, _client() as http:
            async with http.stream("POST", srv.url, content=b"{}") as resp:
                await resp.aread()
    with pytest.raises(httpx.TransportError) as info:
        asyncio.run(main())
    assert isinstance(info.value, (httpx.ReadError, httpx.RemoteProtocolError))
    assert not isinstance(info.value, httpx.TimeoutException)
    assert info.value.__cause__ is not None and type(info.value.__cause__).__module__.startswith("aiohttp")


def test_a_client_outlives_its_first_event_loop():
    """The session closes with the loop that made it (no "Unclosed client session"); the next loop to
    send through the same client gets a new one instead of "Session is closed"."""
    http = _client()

    async def one():
        async with Server("whole") as srv:
            return (await http.post(srv.url, content=b"{}")).content

    assert asyncio.run(one()) == b"0123456789"
    assert asyncio.run(one()) == b"0123456789"
    asyncio.run(http.aclose())
