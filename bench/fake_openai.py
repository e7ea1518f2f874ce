"""A fast OpenAI-compatible fake on 127.0.0.1 for the benchmarks: raw asyncio, HTTP/1.1 keep-alive, pre-encoded SSE.

Every client (chatd's provider, the openai SDK, litellm, lm-deluge, llm) points at the same server and
picks the behaviour of each request through the *model name*, so one server serves every workload:

    fake_c500_t0_g0        500 content chunks, time to first token 0 ms, 0 ms between chunks
    fake_c20_t0_g100       20 chunks 100 ms apart (T4)
    fake_c5_f429_r0.01     429 with `Retry-After: 0.01` and an OpenAI error body
    fake_f500              500 with an error body
    fake_c50_fdrop_d10     200, 10 chunks, then the connection is dropped (no final chunk, no [DONE])

Tokens, `_`-separated after `fake`: c<chunks> (default 5), t<ttft ms> (0), g<gap ms> (0), f<429|500|drop>,
r<retry-after s> (1), d<chunks before a drop> (half). `"stream": false` gets one JSON completion with the
same text. `GET /stats` answers {requests, streams, failures, open} (open = client connections now open),
for leak checks. `POST /v1/chat/completions` and `/chat/completions` under any prefix are accepted.

    python -m bench.fake_openai PORT_FILE      (writes the port once listening; stops on SIGTERM)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import msgspec

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_HEAD_SSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
             b"x-request-id: req_fake\r\ntransfer-encoding: chunked\r\n\r\n")


class Spec(msgspec.Struct, frozen=True):
    chunks: int = 5
    ttft: float = 0.0  # seconds
    gap: float = 0.0  # seconds
    fail: str | None = None  # "429" | "500" | "drop"
    retry_after: str = "1"
    drop_after: int | None = None


_SPECS: dict[str, Spec] = {}


def parse_model(model: str) -> Spec:
    spec = _SPECS.get(model)
    if spec is None:
        kw: dict = {}
        for tok in model.split("/")[-1].split("_")[1:]:
            key, val = tok[:1], tok[1:]
            if key == "c":
                kw["chunks"] = int(val)
            elif key == "t":
                kw["ttft"] = float(val) / 1000
            elif key == "g":
                kw["gap"] = float(val) / 1000
            elif key == "f":
                kw["fail"] = val
            elif key == "r":
                kw["retry_after"] = val
            elif key == "d":
                kw["drop_after"] = int(val)
        spec = _SPECS[model] = Spec(**kw)
    return spec


def _chunk(model: str, created: int, delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
           "system_fingerprint": "fp_fake", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                         "finish_reason": finish}]}
    if usage is not None:
        obj = {**obj, "choices": [], "usage": usage}
    data = b"data: " + _encode(obj) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Stream(msgspec.Struct):
    first: bytes  # role chunk
    content: list[bytes]
    tail: bytes  # finish + usage + [DONE] + terminating chunk


_STREAMS: dict[tuple[str, int, bool], _Stream] = {}


def stream_bytes(model: str, n: int, usage: bool) -> _Stream:
    key = (model, n, usage)
    s = _STREAMS.get(key)
    if s is None:
        created = int(time.time())
        # distinct tokens: litellm rejects a stream that repeats one chunk ("the model is repeating")
        content = [_chunk(model, created, {"content": f"w{i} "}) for i in range(n)]
        tail = _chunk(model, created, {}, "stop")
        if usage:
            tail += _chunk(model, created, {}, None, {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n})
        done = b"data: [DONE]\n\n"
        tail += b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done)
        s = _STREAMS[key] = _Stream(_chunk(model, created, {"role": "assistant", "content": ""}), content, tail)
    return s


def completion_bytes(model: str, n: int) -> bytes:
    body = _encode({"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(f"w{i} " for i in range(n)), "refusal": None},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}})
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def error_bytes(status: int, spec: Spec) -> bytes:
    if status == 429:
        body = _encode({"error": {"message": "Rate limit reached for requests (fake)", "type": "requests",
                                  "param": None, "code": "rate_limit_exceeded"}})
        extra = b"retry-after: %s\r\nx-ratelimit-remaining-requests: 0\r\n" % spec.retry_after.encode()
        reason = b"Too Many Requests"
    else:
        body = _encode({"error": {"message": "The server had an error while processing your request (fake).",
                                  "type": "server_error", "param": None, "code": None}})
        extra, reason = b"", b"Internal Server Error"
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (status, reason, extra, len(body), body))


class Stats:
    requests = 0
    streams = 0
    failures = 0
    open = 0


class FakeProtocol(asyncio.Protocol):
    """One client connection: requests parsed from raw bytes, answered in order (HTTP/1.1 keep-alive)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = bytearray()
        self.busy: asyncio.Task | None = None  # a paced stream in progress; later requests wait for it
        self.queue: list[tuple[bytes, bytes]] = []
        Stats.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        Stats.open -= 1
        if self.busy is not None:
            self.busy.cancel()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            length = 0
            i = head.lower().find(b"content-length:")
            if i >= 0:
                length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4:end + 4 + length])
            del buf[:end + 4 + length]
            self.queue.append((head, body))
            if self.busy is None:
                self._drain()

    def _drain(self) -> None:
        while self.queue and self.busy is None and not self.transport.is_closing():
            head, body = self.queue.pop(0)
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
        if line.startswith(b"GET /stats"):
            out = _encode({"requests": Stats.requests, "streams": Stats.streams, "failures": Stats.failures,
                           "open": Stats.open})
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(out), out))
            return
        if line.startswith(b"GET") and b"/models" in line:
            out = _encode({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "bench"}]})
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(out), out))
            return
        Stats.requests += 1
        try:
            req = _decode(body)
            model = req["model"]
        except Exception:
            msg = b'{"error":{"message":"bad request body","type":"invalid_request_error"}}'
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(msg), msg))
            return
        spec = parse_model(model)
        if spec.fail in ("429", "500"):
            Stats.failures += 1
            self.transport.write(error_bytes(int(spec.fail), spec))
            return
        if not req.get("stream"):
            if spec.ttft:
                self.busy = asyncio.ensure_future(self._later(spec.ttft, completion_bytes(model, spec.chunks)))
            else:
                self.transport.write(completion_bytes(model, spec.chunks))
            return
        Stats.streams += 1
        usage = bool((req.get("stream_options") or {}).get("include_usage"))
        s = stream_bytes(model, spec.chunks, usage)
        if spec.fail == "drop":
            Stats.failures += 1
            self.busy = asyncio.ensure_future(self._paced(s, spec, drop=True))
        elif spec.ttft or spec.gap:
            self.busy = asyncio.ensure_future(self._paced(s, spec))
        else:
            self.transport.write(b"".join((_HEAD_SSE, s.first, *s.content, s.tail)))

    async def _later(self, delay: float, data: bytes) -> None:
        await asyncio.sleep(delay)
        self.transport.write(data)
        self._done()

    async def _paced(self, s: _Stream, spec: Spec, drop: bool = False) -> None:
        write = self.transport.write
        write(_HEAD_SSE + s.first)
        if spec.ttft:
            await asyncio.sleep(spec.ttft)
        n = len(s.content)
        stop = (spec.drop_after if spec.drop_after is not None else n // 2) if drop else n
        for i in range(stop):
            if i and spec.gap:
                await asyncio.sleep(spec.gap)
            write(s.content[i])
        if drop:
            self.transport.abort()  # no terminating chunk, no [DONE]: a dropped stream
            return
        write(s.tail)
        self._done()

    def _done(self) -> None:
        self.busy = None
        self._drain()


async def serve(port_file: str, port: int = 0) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeProtocol, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    async with server:
        await stop.wait()


class FakeServer:
    """The fake in its own process (so its CPU is not the client's); `url` is its OpenAI base URL."""

    def __init__(self, work: str, python: str = sys.executable) -> None:
        import subprocess

        self.port_file = os.path.join(work, "fake.port")
        self.proc = subprocess.Popen([python, "-m", "bench.fake_openai", self.port_file])
        deadline = time.monotonic() + 20
        while not os.path.exists(self.port_file):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        with open(self.port_file) as f:
            self.port = int(f.read())
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as resp:
            return _decode(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
