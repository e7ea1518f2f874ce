"""Bench only: `chatd serve` with its shared HTTP client's connection cap lifted, to measure the fix for T4.

`chatd.config.make_http_client` passes `httpx.Limits(max_connections=None)` to httpx-aiohttp's transport,
which then omits aiohttp's `limit`, so `aiohttp.TCPConnector` keeps its own default of 100 connections:
at 1,000 concurrent streams, 900 wait for a free connection. The fix measured here builds the session
itself with `TCPConnector(limit=0)` (no cap). chatd's own code is not modified; this wraps it at start-up.

    python -m bench.whatif_pool serve --ready-fd FD      (same arguments as `chatd serve`)
"""

from __future__ import annotations

import sys

import httpx


def uncapped_client(settings) -> httpx.AsyncClient:
    """What `make_http_client` would build with the fix: the aiohttp session made here, with no cap."""
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout, write=settings.write_timeout,
                            pool=settings.pool_timeout)

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))

    return httpx.AsyncClient(timeout=timeout, transport=AiohttpTransport(client=session))


def install() -> None:
    from chatd import config

    config.make_http_client = uncapped_client


if __name__ == "__main__":
    install()
    from chatd.cli import main

    raise SystemExit(main(sys.argv[1:]))
