"""The HTTP part every provider shares: POST a JSON body, classify a failed status from the body, parse
the 2xx reply (an SSE stream from raw byte chunks, or one JSON document), and turn every transport
failure into a ProviderError whose text carries no secret. Adapters supply only their URL, headers and
error-body reader.

Requests go straight to the transport the client picks for the URL (`_posted`), carrying the client's
timeouts and default headers, but `AsyncClient.send`'s layers for auth, cookies, redirects and event
hooks are skipped, since providers use none of them. Skipping them is worth 1.5x the requests per second
at 100 in flight (bench/http_floor.py); errors are httpx's either way, raised by the transport."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable

import httpx
import msgspec

from chatd.providers.base import ProviderError, scrub
from chatd.providers.sse import SSEParser

ErrorFromBody = Callable[[int, bytes, Any], ProviderError]


async def post_sse(http: httpx.AsyncClient, url: str, *, body: dict[str, Any], headers: dict[str, str],
                   secrets: Iterable[str | None], error_from_body: ErrorFromBody,
                   provider: str) -> AsyncIterator[tuple[str | None, str]]:
    """POST `body` and yield the (event, data) pairs of a 2xx reply; every failure as a ProviderError.

    A failure before any byte of the reply is a `connection` error, after it a `stream` error (the
    reply broke mid-way), and a real timeout a `timeout`."""
    secrets = tuple(s for s in secrets if s)
    received = False
    try:
        async with _posted(http, url, body, headers) as resp:
            if resp.status_code >= 300:
                await _raise_status(resp, error_from_body, secrets)
            parser = SSEParser()
            async with _body(resp) as chunks:
                async for chunk in chunks:
                    received = True
                    for item in parser.feed(chunk):
                        yield item
            for item in parser.flush():
                yield item
    except ProviderError:
        raise
    except (httpx.HTTPError, OSError, ValueError, UnicodeError) as err:
        raise transport_error(err, received, provider, url, secrets) from None


async def post_json(http: httpx.AsyncClient, url: str, *, body: dict[str, Any], headers: dict[str, str],
                    secrets: Iterable[str | None], error_from_body: ErrorFromBody, provider: str) -> bytes:
    """POST `body` and return the body of a 2xx reply (a non-streamed completion, for the adapter to
    decode); every failure classified as `post_sse` classifies it."""
    secrets = tuple(s for s in secrets if s)
    received = False
    try:
        resp = await _send(http, url, body, headers)
        try:  # `_posted` without its context manager, and the body in one read: once per batch prompt
            if resp.status_code >= 300:
                await _raise_status(resp, error_from_body, secrets)
            received = True
            read_whole = getattr(resp.stream, "read_whole", None)  # chatd's aiohttp transport has one
            if read_whole is not None and resp.headers.get("content-encoding", "identity") == "identity":
                return await read_whole()
            async with _body(resp) as chunks:
                return b"".join([chunk async for chunk in chunks])
        finally:
            await resp.aclose()
    except ProviderError:
        raise
    except (httpx.HTTPError, OSError, ValueError, UnicodeError) as err:
        raise transport_error(err, received, provider, url, secrets) from None


async def _send(http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    """One POST through the client's transport, the response body not yet read (the caller closes it)."""
    request = _request(http, url, msgspec.json.encode(body), headers)
    response = await http._transport_for_url(request.url).handle_async_request(request)
    response.request = request
    return response


@asynccontextmanager
async def _posted(http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
                  ) -> AsyncIterator[httpx.Response]:
    """One POST through the client's transport, the response body not yet read; closed on exit."""
    response = await _send(http, url, body, headers)
    try:
        yield response
    finally:
        await response.aclose()


@asynccontextmanager
async def _body(resp: httpx.Response) -> AsyncIterator[AsyncIterator[bytes]]:
    """The reply's body as byte chunks, closed on exit: the transport's own stream when the body is not
    content-encoded (the common case: two generator layers fewer than httpx's `aiter_bytes`, which also
    decodes), else httpx's decoding iterator. Closing it on exit matters: a reader that stops at the
    provider's end-of-stream event leaves it suspended, and the event loop's async-generator finalizer
    would then wake the loop through its self-pipe (one write and one task per generator) to close each
    of the nested generators."""
    if resp.headers.get("content-encoding", "identity") == "identity":
        chunks = aiter(resp.stream)  # type: ignore[arg-type]  # an AsyncByteStream: the client is async
    else:
        chunks = resp.aiter_bytes()
    try:
        yield chunks
    finally:
        if (aclose := getattr(chunks, "aclose", None)) is not None:
            await aclose()


_URLS: dict[str, httpx.URL] = {}  # each endpoint URL parsed once (a daemon has a handful)


def _request(http: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str]) -> httpx.Request:
    """The POST `http.build_request` would make, the same headers in the same order, at half its cost
    (each turn): Host, the client's default headers (an adapter's header of the same name wins, names
    case-insensitive), the adapter's, then Content-Length, and the client's timeouts. Given all its headers
    and its body as a stream, httpx.Request skips working them out again. No base URL, params or cookies,
    which providers do not use; `_URLS` keeps the parsed URL."""
    parsed = _URLS.get(url)
    if parsed is None:
        if len(_URLS) >= 256:
            _URLS.clear()
        parsed = _URLS[url] = httpx.URL(url)
    merged = {name.lower(): (name, value) for name, value in http.headers.raw}
    for name, value in headers.items():  # as httpx merges: a replaced default moves to the adapter's place
        merged.pop(key := name.lower().encode("latin-1"), None)
        merged[key] = (name, value)
    merged.pop(b"content-length", None)
    host = [] if b"host" in merged else [(b"Host", parsed.netloc)]
    request = httpx.Request("POST", parsed, stream=httpx.ByteStream(content),
                            headers=[*host, *merged.values(), (b"Content-Length", b"%d" % len(content))],
                            extensions={"timeout": http.timeout.as_dict()})
    request.read()  # the body is already whole: this only makes it `request.content`
    return request


async def _raise_status(resp: httpx.Response, error_from_body: ErrorFromBody, secrets: tuple[str, ...]) -> None:
    raw = await resp.aread()
    err = error_from_body(resp.status_code, raw, resp.headers)
    raise ProviderError(err.kind, scrub(err.message, secrets), status=err.status, retry_after=err.retry_after)


def transport_error(err: Exception, received: bool, provider: str, url: str, secrets: tuple[str, ...]
                    ) -> ProviderError:
    """A transport failure as a ProviderError: a real timeout is `timeout`; anything else is `connection`
    before any byte of the reply and `stream` after (the reply broke mid-way)."""
    kind = "stream" if received else "connection"
    if isinstance(err, httpx.HTTPError):
        if isinstance(err, httpx.TimeoutException):  # both transports raise these for real timeouts alone
            return ProviderError("timeout", scrub(f"{provider}: timed out talking to {host_of(url)}"
                                                  f" ({type(err).__name__})", secrets))
        return ProviderError(kind, scrub(f"{provider}: {type(err).__name__} talking to {host_of(url)}: {err}",
                                         secrets))
    return ProviderError(kind, scrub(f"{provider}: {type(err).__name__}: {err}", secrets))


def host_of(url: str) -> str:
    try:
        return httpx.URL(url).host or url
    except Exception:
        return "the provider"


def error_message_of(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The provider's own message from a JSON error body ({"error": {"message": ...}}, possibly wrapped
    in a list), and the error object; the raw text (truncated) when the body is not that."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw[:500].decode("utf-8", "replace").strip() or "(empty error body)", {}
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"], error
    if isinstance(error, str):
        return error, {}
    return raw[:500].decode("utf-8", "replace"), {}
