"""Turn workloads (T2–T5, T9), run as their own process: through the daemon's socket, or direct to the fake.

*Daemon* commands are a minimal asyncio JSON-RPC client (LSP framing, msgspec) that counts `chat/delta`
notifications per turn. *Direct* commands stream the same request from the fake with chatd's own
`OpenAIChatProvider` over the same shared HTTP client the daemon builds (`chatd.config.make_http_client`,
the aiohttp-backed transport), so the difference is what the daemon adds. Prints one JSON object.

    python -m bench.llm_load send SOCK MODEL COUNT CONV          -> {"us", "first_us", "deltas", "errors"}
    python -m bench.llm_load direct URL MODEL COUNT              -> the same, direct
    python -m bench.llm_load fanout SOCK MODEL N INFLIGHT CONNS PREFIX  -> {"wall", "deltas", "errors", "lat"}
    python -m bench.llm_load direct-fanout URL MODEL N INFLIGHT  -> the same, direct
    python -m bench.llm_load batch SOCK MODEL N CONCURRENCY      -> {"wall", "ok", "failed"}
    python -m bench.llm_load fail SOCK MODEL COUNT CONV          -> {"us": [until the error reply], "kinds"}
    python -m bench.llm_load direct-fail URL MODEL COUNT         -> {"us": [until ProviderError], "kinds"}
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
clock = time.perf_counter


class Conn:
    """One socket connection; replies resolve futures, `chat/delta`s are counted per conversation."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future] = {}
        self.deltas: dict[str, int] = {}
        self.first: dict[str, float] = {}

    async def open(self, path: str) -> "Conn":
        self.reader, self.writer = await asyncio.open_unix_connection(path, limit=1 << 24)
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        buf = bytearray()
        read = self.reader.read
        while True:
            data = await read(1 << 20)
            if not data:
                for fut in self.waiting.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("daemon closed the connection"))
                return
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                length = int(bytes(buf[:end]).partition(b":")[2])
                if len(buf) < end + 4 + length:
                    break
                msg = _decode(bytes(buf[end + 4:end + 4 + length]))
                del buf[:end + 4 + length]
                method = msg.get("method")
                if method == "chat/delta":
                    conv = msg["params"]["conversation"]
                    n = self.deltas.get(conv, 0)
                    if n == 0:
                        self.first[conv] = clock()
                    # the daemon merges deltas that arrive in one tick: count the fake's chunks ("w<i> ")
                    # by the text they carried, not by notifications
                    self.deltas[conv] = n + msg["params"]["text"].count(" ")
                elif method is None:
                    fut = self.waiting.pop(msg.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)

    async def call(self, method: str, params: Any) -> dict:
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[i] = fut
        body = _encode({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
        self.writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return await fut

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


def _send_params(conv: str, model: str, i: int) -> dict:
    return {"conversation": conv, "text": f"turn {i}: hello there", "models": [model]}


# ---------------------------------------------------------------- daemon
async def send(path: str, model: str, count: int, conv: str) -> dict:
    c = await Conn().open(path)
    out: dict[str, list] = {"us": [], "first_us": [], "deltas": [], "errors": []}
    for i in range(count):
        c.deltas.pop(conv, None)
        t0 = clock()
        reply = await c.call("chat/send", _send_params(conv, model, i))
        t1 = clock()
        if "error" in reply:
            out["errors"].append(reply["error"].get("message", "")[:200])
            continue
        out["us"].append((t1 - t0) * 1e6)
        out["first_us"].append((c.first.get(conv, t1) - t0) * 1e6)
        out["deltas"].append(c.deltas.get(conv, 0))
    c.close()
    return out


async def fanout(path: str, model: str, n: int, inflight: int, conns: int, prefix: str) -> dict:
    cs = [await Conn().open(path) for _ in range(conns)]
    sem = asyncio.Semaphore(inflight)
    errors: list[str] = []
    lat: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            c = cs[i % conns]
            t0 = clock()
            reply = await c.call("chat/send", _send_params(f"{prefix}{i}", model, i))
            if "error" in reply:
                errors.append(reply["error"].get("message", "")[:200])
            else:
                lat.append(clock() - t0)

    t0 = clock()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = clock() - t0
    deltas = sum(sum(c.deltas.values()) for c in cs)
    for c in cs:
        c.close()
    lat.sort()
    return {"wall": wall, "deltas": deltas, "errors": len(errors), "error_sample": errors[:3],
            "p50": lat[len(lat) // 2] if lat else None, "p99": lat[int(len(lat) * 0.99)] if lat else None}


async def batch(path: str, model: str, n: int, concurrency: int) -> dict:
    c = await Conn().open(path)
    prompts = [f"prompt {i}: say something short" for i in range(n)]
    t0 = clock()
    reply = await c.call("chat/batch", {"prompts": prompts, "models": [model], "maxConcurrent": concurrency})
    wall = clock() - t0
    c.close()
    if "error" in reply:
        return {"wall": wall, "ok": 0, "failed": n, "error": reply["error"]}
    res = reply["result"]
    return {"wall": wall, "ok": res["done"] - res["failed"], "failed": res["failed"]}


async def fail(path: str, model: str, count: int, conv: str) -> dict:
    c = await Conn().open(path)
    us, kinds = [], {}
    for i in range(count):
        t0 = clock()
        reply = await c.call("chat/send", _send_params(conv, model, i))
        us.append((clock() - t0) * 1e6)
        err = reply.get("error") or {}
        key = str(err.get("code", "ok"))
        kinds[key] = kinds.get(key, 0) + 1
    c.close()
    return {"us": us, "kinds": kinds}


# ---------------------------------------------------------------- direct
def _provider(url: str) -> Any:
    """chatd's provider over chatd's shared client."""
    from chatd.config import HttpSettings, make_http_client
    from chatd.providers.openai_chat import COMPAT, OpenAIChatProvider

    http = make_http_client(HttpSettings())
    return http, OpenAIChatProvider(http, base_url=url, api_key="sk-bench", name="fake", dialect=COMPAT)


def _request(model: str, i: int, history: list | None = None) -> Any:
    """Turn `i`'s request: its user message after `history` (the conversation so far, which it joins)."""
    from chatd import protocol as p
    from chatd.providers.base import ModelSpec, ProviderRequest

    text = f"turn {i}: hello there"
    messages = history if history is not None else []
    messages.append(p.MessageOut(seq=len(messages) + 1, role="user", text=text, parts=[p.TextPart(text)]))
    return ProviderRequest(model=ModelSpec(name=model, provider="fake", api_model=model), system=None,
                           messages=list(messages))


async def _one_direct(prov: Any, model: str, i: int, history: list | None = None) -> tuple[float, float, int]:
    """One streamed turn; with `history`, the reply joins it as the daemon's conversation would."""
    from chatd import protocol as p
    from chatd.providers.base import TextDelta

    t0 = clock()
    first = 0.0
    n = 0
    texts = []
    async for ev in prov.stream(_request(model, i, history)):
        if type(ev) is TextDelta:
            if n == 0:
                first = clock()
            n += 1
            texts.append(ev.text)
    t1 = clock()
    if history is not None:
        text = "".join(texts)
        history.append(p.MessageOut(seq=len(history) + 1, role="assistant", text=text, parts=[p.TextPart(text)]))
    return t1 - t0, (first or t1) - t0, n


async def direct(url: str, model: str, count: int) -> dict:
    """`count` turns of one conversation, sent direct: each request carries the history so far, as the
    daemon's turns of one conversation do, so the difference is what the daemon adds, not a longer body."""
    http, prov = _provider(url)
    out: dict[str, list] = {"us": [], "first_us": [], "deltas": [], "errors": []}
    history: list = []
    for i in range(count):
        total, first, n = await _one_direct(prov, model, i, history)
        out["us"].append(total * 1e6)
        out["first_us"].append(first * 1e6)
        out["deltas"].append(n)
    await http.aclose()
    return out


async def direct_fanout(url: str, model: str, n: int, inflight: int) -> dict:
    http, prov = _provider(url)
    sem = asyncio.Semaphore(inflight)
    errors: list[str] = []
    lat: list[float] = []
    deltas = 0

    async def one(i: int) -> None:
        nonlocal deltas
        async with sem:
            try:
                total, _first, k = await _one_direct(prov, model, i)
                lat.append(total)
                deltas += k
            except Exception as err:  # counted, like the daemon's error replies
                errors.append(str(err)[:200])

    t0 = clock()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = clock() - t0
    await http.aclose()
    lat.sort()
    return {"wall": wall, "deltas": deltas, "errors": len(errors), "error_sample": errors[:3],
            "p50": lat[len(lat) // 2] if lat else None, "p99": lat[int(len(lat) * 0.99)] if lat else None}


async def direct_fail(url: str, model: str, count: int) -> dict:
    from chatd.providers.base import ProviderError

    http, prov = _provider(url)
    us, kinds = [], {}
    for i in range(count):
        t0 = clock()
        try:
            async for _ in prov.stream(_request(model, i)):
                pass
            kind = "ok"
        except ProviderError as err:
            kind = err.kind
        us.append((clock() - t0) * 1e6)
        kinds[kind] = kinds.get(kind, 0) + 1
    await http.aclose()
    return {"us": us, "kinds": kinds}


def main(argv: list[str]) -> None:
    cmd, a = argv[0], argv[1:]
    if cmd == "send":
        coro = send(a[0], a[1], int(a[2]), a[3])
    elif cmd == "direct":
        coro = direct(a[0], a[1], int(a[2]))
    elif cmd == "fanout":
        coro = fanout(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), a[5])
    elif cmd == "direct-fanout":
        coro = direct_fanout(a[0], a[1], int(a[2]), int(a[3]))
    elif cmd == "batch":
        coro = batch(a[0], a[1], int(a[2]), int(a[3]))
    elif cmd == "fail":
        coro = fail(a[0], a[1], int(a[2]), a[3])
    elif cmd == "direct-fail":
        coro = direct_fail(a[0], a[1], int(a[2]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    sys.stdout.buffer.write(_encode(asyncio.run(coro)))


if __name__ == "__main__":
    main(sys.argv[1:])
