"""Bench only: how many non-streamed POSTs per second each layer of the HTTP stack can carry, 100 in flight,
against bench/fake_openai.py. It is the measurement behind providers/transport.py's direct send.

    .venv/bin/python -m bench.http_floor [--requests N] [--rounds R]

Layers, slowest first: `AsyncClient.stream` (what the providers used before), `AsyncClient.post`, the
client's `build_request` then its transport (what `transport._posted` does), the transport alone, and a
raw aiohttp session (lm-deluge's client; a floor httpx cannot reach). Prints one line per layer and round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from typing import Awaitable, Callable

import msgspec

from chatd.config import HttpSettings, make_http_client

BODY = msgspec.json.encode({"model": "fake_c5_t0_g0", "messages": [{"role": "user", "content": "hi"}]})
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench", "Accept": "application/json"}


async def rate(one: Callable[[], Awaitable[None]], n: int, in_flight: int = 100) -> float:
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            await one()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return n / (time.perf_counter() - t0)


async def measure(url: str, n: int, rounds: int) -> None:
    import aiohttp

    http = make_http_client(HttpSettings())
    transport = http._transport_for_url(http.build_request("POST", url).url)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def client_stream() -> None:
        async with http.stream("POST", url, content=BODY, headers=HEADERS) as resp:
            await resp.aread()

    async def client_post() -> None:
        await http.post(url, content=BODY, headers=HEADERS)

    async def build_then_transport() -> None:
        resp = await transport.handle_async_request(http.build_request("POST", url, content=BODY, headers=HEADERS))
        try:
            await resp.aread()
        finally:
            await resp.aclose()

    async def raw_aiohttp() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as resp:
            await resp.read()

    layers = [("AsyncClient.stream + aread", client_stream), ("AsyncClient.post", client_post),
              ("build_request + transport (chatd)", build_then_transport), ("raw aiohttp session", raw_aiohttp)]
    try:
        for r in range(rounds):
            for name, one in layers:
                print(f"round {r + 1}  {name:36s} {await rate(one, n):8,.0f} requests/s", flush=True)
    finally:
        await http.aclose()
        await session.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        fake = subprocess.Popen([sys.executable, "-m", "bench.fake_openai", port_file], stdin=subprocess.DEVNULL)
        try:
            while not (os.path.exists(port_file) and open(port_file).read().strip()):
                if fake.poll() is not None:
                    raise SystemExit("the fake server did not start")
                time.sleep(0.02)  # waiting for another process to listen: nothing to await
            port = int(open(port_file).read())
            asyncio.run(measure(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests, args.rounds))
        finally:
            fake.terminate()
            fake.wait()


if __name__ == "__main__":
    main()
