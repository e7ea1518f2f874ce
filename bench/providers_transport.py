"""Provider transport and parse cost (issue #3), measured, not asserted.

1. Transport: N concurrent streamed Chat Completions (default 1,000) through `OpenAIChatProvider.stream`
   against a local fake server in a separate process (the recorded text stream, its events sent with a
   gap between them, like tokens). Compared: httpx's default AsyncClient pool (100 connections),
   httpx's pool with no connection cap, chatd's aiohttp-backed httpx transport (providers/aiohttp_transport.py), and an
   "ideal" floor: a hand-rolled asyncio HTTP/1.1 client doing the same requests and SSE parsing.
2. Parse cost: a 2,000-chunk Chat Completions stream (and a 2,000-event Responses stream) built from the
   recorded fixtures, one SSE event per network chunk: `SSEParser.feed` + the adapter's parser producing
   neutral events, as a ratio to a plain `json.loads` of each `data:` payload in the same run.

Run: .venv/bin/python bench/providers_transport.py [--streams 1000] [--rounds 3] [--gap-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "providers"))

import httpx  # noqa: E402

from chatd import protocol as p  # noqa: E402
from chatd.models import ModelRegistry  # noqa: E402
from chatd.providers.base import ProviderRequest  # noqa: E402
from chatd.providers.openai_chat import ChatStream, OpenAIChatProvider  # noqa: E402
from chatd.providers.openai_responses import ResponsesStream  # noqa: E402
from chatd.providers.sse import SSEParser  # noqa: E402
from fakes import fixture_events, sse  # noqa: E402


# ---------------------------------------------------------------- the fake server (own process)
async def serve(port_file: str, gap: float) -> None:
    events = fixture_events("openai_chat_text_stream.txt")
    payload = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                hdr = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in hdr.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                writer.write(head)
                for chunk in payload:
                    writer.write(chunk)
                    await writer.drain()
                    if gap:
                        await asyncio.sleep(gap)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    async with server:
        await server.serve_forever()


def start_server(gap_ms: float) -> tuple[subprocess.Popen, str]:
    port_file = f"/tmp/chatd-bench-port-{os.getpid()}"
    if os.path.exists(port_file):
        os.unlink(port_file)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", port_file, "--gap-ms", str(gap_ms)])
    deadline = time.monotonic() + 20
    while not os.path.exists(port_file):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("fake server did not start")
        time.sleep(0.02)
    with open(port_file) as f:
        port = int(f.read())
    os.unlink(port_file)
    return proc, f"http://127.0.0.1:{port}/v1"


# ---------------------------------------------------------------- clients
REQ = ProviderRequest(model=ModelRegistry().get("gpt-4o"), system=None,
                      messages=[p.MessageOut(seq=1, role="user", text="Hello!", parts=[p.TextPart("Hello!")])])


async def via_provider(client: httpx.AsyncClient, url: str, n: int) -> list[float]:
    prov = OpenAIChatProvider(client, base_url=url, api_key="sk-bench-0000000000")

    async def one() -> float:
        t0 = time.perf_counter()
        async for _ in prov.stream(REQ):
            pass
        return time.perf_counter() - t0

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def via_raw(url: str, n: int) -> list[float]:
    """The floor: one asyncio connection per stream, the same request, SSEParser + ChatStream."""
    u = httpx.URL(url)
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}],
                       "stream": True}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n%s" % (u.host.encode(), len(body), body))

    async def one() -> float:
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection(u.host, u.port)
        writer.write(req)
        await reader.readuntil(b"\r\n\r\n")
        parser, state = SSEParser(), ChatStream()
        while not state.done:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                break
            chunk = await reader.readexactly(size + 2)
            for _e, data in parser.feed(chunk[:-2]):
                state.feed(data)
        state.end()
        writer.close()
        return time.perf_counter() - t0

    return list(await asyncio.gather(*(one() for _ in range(n))))


def make_client(kind: str) -> httpx.AsyncClient | None:
    timeout = httpx.Timeout(120.0)
    if kind == "httpx-default":
        return httpx.AsyncClient(timeout=timeout)
    if kind == "httpx-unlimited":
        return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=None,
                                                                      max_keepalive_connections=100))
    if kind == "aiohttp":
        from chatd.providers.aiohttp_transport import AiohttpTransport
        return httpx.AsyncClient(timeout=timeout, transport=AiohttpTransport(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100)))
    return None


async def transport_round(kind: str, url: str, n: int) -> dict[str, float]:
    client = make_client(kind)
    t0 = time.perf_counter()
    if client is None:
        lat = await via_raw(url, n)
    else:
        async with client:
            lat = await via_provider(client, url, n)
    wall = time.perf_counter() - t0
    lat.sort()
    return {"wall": wall, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99) - 1]}


# ---------------------------------------------------------------- parse cost
def chat_chunks(n: int) -> list[bytes]:
    events = fixture_events("openai_chat_text_stream.txt")
    deltas = events[1:-3]
    body = [deltas[i % len(deltas)] for i in range(n - 4)]
    return [events[0], *body, *events[-3:]]


def responses_chunks(n: int) -> list[bytes]:
    events = fixture_events("openai_responses_text_stream.txt")
    delta = next(e for e in events if b"output_text.delta" in e)
    head = [e for e in events if b"output_text.delta" not in e][:4]
    tail = [e for e in events if b"output_text.delta" not in e][4:]
    return head + [delta] * (n - len(head) - len(tail)) + tail


def payloads(chunks: list[bytes]) -> list[str]:
    out = []
    for c in chunks:
        for line in c.decode().splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(line[6:])
    return out


def parse_chat(chunks: list[bytes]) -> int:
    sp, st, n = SSEParser(), ChatStream(), 0
    for c in chunks:
        for _e, data in sp.feed(c):
            n += len(st.feed(data))
    return n + len(st.end())


def parse_responses(chunks: list[bytes]) -> int:
    sp, st, n = SSEParser(), ResponsesStream(), 0
    for c in chunks:
        for e, data in sp.feed(c):
            n += len(st.feed(e, data))
    return n + len(st.end())


def loads_all(lines: list[str]) -> int:
    loads = json.loads
    for line in lines:
        loads(line)
    return len(lines)


def best_of(fn, arg, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return min(times)


def parse_cost(repeats: int = 30) -> list[tuple[str, float, float, float]]:
    rows = []
    for name, chunks, fn in (("openai chat", chat_chunks(2000), parse_chat),
                             ("openai responses", responses_chunks(2000), parse_responses)):
        lines = payloads(chunks)
        ratios, ours_t, base_t = [], [], []
        for _ in range(5):  # interleave adapter and baseline so both see the same machine state
            o, b = best_of(fn, chunks, repeats), best_of(loads_all, lines, repeats)
            ours_t.append(o)
            base_t.append(b)
            ratios.append(o / b)
        per = len(chunks)
        rows.append((name, statistics.median(ours_t) / per * 1e6, statistics.median(base_t) / per * 1e6,
                     statistics.median(ratios)))
    return rows


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve")
    ap.add_argument("--gap-ms", type=float, default=5.0)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kinds", default="raw,httpx-default,httpx-unlimited,aiohttp")
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.gap_ms / 1000))
        return
    print("## parse cost, 2,000 chunks (one SSE event per chunk)\n")
    print("| adapter | adapter µs/chunk | json.loads µs/line | ratio |\n|---|---|---|---|")
    for name, ours, base, ratio in parse_cost():
        print(f"| {name} | {ours:.2f} | {base:.2f} | {ratio:.2f}x |")
    proc, url = start_server(args.gap_ms)
    try:
        kinds = args.kinds.split(",")
        results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:  # rotate the order per round
                results[kind].append(asyncio.run(transport_round(kind, url, args.streams)))
        ideal = 7 * args.gap_ms / 1000  # the server's own pacing: 7 gaps per stream
        floor = statistics.median(x["wall"] for x in results["raw"]) if "raw" in results else None
        print(f"\n## {args.streams} concurrent streams, {args.gap_ms} ms between events, medians of "
              f"{args.rounds} rounds (server pacing alone: {ideal * 1000:.0f} ms)\n")
        print("| transport | wall s | streams/s | p50 s | p99 s | x raw asyncio |\n|---|---|---|---|---|---|")
        for kind in kinds:
            wall = statistics.median(x["wall"] for x in results[kind])
            p50 = statistics.median(x["p50"] for x in results[kind])
            p99 = statistics.median(x["p99"] for x in results[kind])
            rel = f"{wall / floor:.2f}x" if floor else "-"
            print(f"| {kind} | {wall:.2f} | {args.streams / wall:.0f} | {p50:.2f} | {p99:.2f} | {rel} |")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
