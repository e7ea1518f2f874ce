"""chatd's httpx transport: httpx's request and response types, sent over one aiohttp session.

httpx stays the client API (every provider takes an `httpx.AsyncClient`), but httpx's own async pool
collapses at many concurrent streams (encode/httpx#3215; bench/providers_transport.py), so the shared
client sends through aiohttp's pool instead. This replaces the httpx-aiohttp package, which did the same
at more cost per request: it handed aiohttp the `httpx.Headers` object (rebuilt header by header into
aiohttp's multidict), made a new `ClientTimeout` and parsed the URL on every request, and read replies
through an async generator inside a context manager. Here the headers go over as a plain list, timeouts
and URLs are built once, and the reply is read by a plain async iterator. Measured with
providers/transport.py's `post_json` at 100 in flight against bench/fake_openai.py, medians of 6
interleaved rounds: 5,400 POSTs a second over httpx-aiohttp, 6,360 over this.

Errors are httpx's, mapped by what aiohttp says happened: only a real timeout is an
`httpx.TimeoutException` (a refused connect is a `ConnectError`, a connection dropped mid-reply a
`ReadError` or `RemoteProtocolError`), so providers/transport.py can tell a timeout from a dead server.

The session is made inside the running loop on the first request, and closes with that loop: a suspended
async generator registered with the loop closes it, since `asyncio.run` closes every live async
generator before it closes the loop, and a dropped transport's generator is closed by the loop's
finalizer hook. A script that never calls `aclose()` thus ends without aiohttp's "Unclosed client
session" warnings; `aclose()` closes both at once."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, AsyncIterator

import aiohttp
import httpx
import yarl
from aiohttp.client_proto import ResponseHandler


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp session. `limits.max_connections` None or 0 is no cap (aiohttp's
    own default would be 100, and the 101st concurrent stream would wait for a free connection).
    `limits.max_keepalive_connections` caps the idle connections kept per host, as httpx's pool does
    (aiohttp has no such cap: after a burst of 1,000 streams it kept ~900 idle sockets for the whole
    `keepalive_expiry`); a connection finishing beyond it is closed."""

    def __init__(self, limits: httpx.Limits = httpx.Limits(max_connections=None)) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._closer: AsyncIterator[None] | None = None
        self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, yarl.URL] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None or session.closed:  # first use, or its loop has ended: a new one in this loop
            session = self._open()
        try:
            data: Any = request.content or None
        except httpx.RequestNotRead:  # a streamed body: aiohttp sends it chunked
            data = request.stream
            request.headers.pop("transfer-encoding", None)
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        try:
            response = await session.request(request.method, self._url(request.url), headers=headers, data=data,
                                             allow_redirects=False, auto_decompress=False,
                                             timeout=self._timeout(request.extensions.get("timeout")),
                                             server_hostname=request.extensions.get("sni_hostname"))
        except Exception as err:
            raise _httpx_error(err, httpx.ConnectError)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(response.status, headers=response.raw_headers, stream=_Body(response),
                              request=request, extensions=extensions)

    def _url(self, url: httpx.URL) -> yarl.URL:
        text = str(url)
        parsed = self._urls.get(text)
        if parsed is None:
            if len(self._urls) >= 256:
                self._urls.clear()
            parsed = self._urls[text] = yarl.URL(text, encoded=True)  # httpx has already percent-encoded it
        return parsed

    def _timeout(self, timeout: dict[str, float | None] | None) -> aiohttp.ClientTimeout:
        """httpx's timeouts as aiohttp's: connect is the socket connect, read the gap between reads, pool the
        wait for a connection and its connect (aiohttp has no write timeout)."""
        timeout = timeout or {}
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        made = self._timeouts.get(key)
        if made is None:
            made = self._timeouts[key] = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1],
                                                               connect=key[2])
        return made

    def _open(self) -> aiohttp.ClientSession:
        cap = self._limits.max_connections or 0
        connector = _Connector(self._limits.max_keepalive_connections, limit=cap,
                               keepalive_timeout=self._limits.keepalive_expiry,
                               ssl=httpx.create_ssl_context())  # httpx's: certifi's CAs
        session = self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self._closer = _close_on_loop_shutdown(session)
        try:  # run it to its `yield`: the first step registers it with the running loop
            self._closer.asend(None).send(None)
        except StopIteration:
            pass
        return session

    async def aclose(self) -> None:
        session, closer, self._session, self._closer = self._session, self._closer, None, None
        if session is not None:
            await session.close()
        if closer is not None:  # closed now, so nothing is left for the loop's finalizer hook
            await closer.aclose()  # type: ignore[attr-defined]


class _Reader(ResponseHandler):
    """aiohttp's protocol for a connection, its read timeout moved lazily. aiohttp cancels the timer and
    makes a new one for every chunk it receives (11% of the daemon's busy time in bench T4's 1,000
    streams, and cancelled timers pile up in the loop's heap); this keeps one, which, when it goes off
    and data came meanwhile, sets itself again for the last chunk's time plus the timeout. A silent
    connection times out when aiohttp's would."""

    __slots__ = ("_last_read",)

    def _reschedule_timeout(self) -> None:
        if not self._read_timeout:
            self._drop_timeout()
            return
        self._last_read = self._loop.time()
        if self._read_timeout_handle is None:
            self._read_timeout_handle = self._loop.call_at(self._last_read + self._read_timeout, self._when_due)

    def _when_due(self) -> None:
        self._read_timeout_handle = None
        if not self._read_timeout:
            return
        due = self._last_read + self._read_timeout
        if self._loop.time() >= due:
            self._on_read_timeout()
        else:
            self._read_timeout_handle = self._loop.call_at(due, self._when_due)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector with `_Reader` connections, keeping at most `idle_cap` idle connections per host
    (None: no cap)."""

    def __init__(self, idle_cap: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._idle_cap = idle_cap
        self._factory = functools.partial(_Reader, loop=self._loop)

    def _release(self, key: Any, protocol: Any, **kwargs: Any) -> None:
        super()._release(key, protocol, **kwargs)  # the connection is appended to the key's idle queue
        idle = self._conns.get(key)
        if self._idle_cap is not None and idle is not None and len(idle) > self._idle_cap:
            proto, _ = idle.pop()  # the one just released (aiohttp reuses the oldest first)
            proto.close()


async def _close_on_loop_shutdown(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


class _Body(httpx.AsyncByteStream):
    """A reply's body as the chunks aiohttp has read, each as soon as it arrives (an SSE event is not held
    back to fill a buffer). Closing it before the end closes the connection rather than reusing it."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    def __aiter__(self) -> "_Body":
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except Exception as err:
            raise _httpx_error(err, httpx.ReadError)
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read_whole(self) -> bytes:
        """The whole body in one call (iterating takes one call, and one loop wake-up, per chunk)."""
        try:
            return await self._response.read()
        except Exception as err:
            raise _httpx_error(err, httpx.ReadError)

    async def aclose(self) -> None:
        self._response.release()
        try:
            await self._response.wait_for_close()
        except Exception as err:
            raise _httpx_error(err, httpx.ReadError)


def _httpx_error(err: Exception, otherwise: type[httpx.TransportError]) -> Exception:
    """aiohttp's exception as httpx's, caused by it (anything else as it is); `otherwise` for a connection
    failure aiohttp does not name further (a connect error before the reply, a read error during it)."""
    mapped = _mapped(err, otherwise)
    if mapped is not err:
        mapped.__cause__ = err
    return mapped


def _mapped(err: Exception, otherwise: type[httpx.TransportError]) -> Exception:
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(err) or "timed out connecting")
    if isinstance(err, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(str(err) or "timed out waiting for the reply")
    if isinstance(err, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(err))
    if isinstance(err, (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(str(err) or type(err).__name__)
    if isinstance(err, aiohttp.ClientPayloadError):
        return httpx.ReadError(str(err))
    if isinstance(err, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return httpx.UnsupportedProtocol(str(err))
    if isinstance(err, (aiohttp.ClientError, OSError)):
        return otherwise(str(err) or type(err).__name__)
    return err
