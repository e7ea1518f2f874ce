"""A fake OpenAI-compatible server for routing tests, with faults scripted per model and a request log.

It is tests/providers/fakes.py's FakeServer (real HTTP/1.1 on 127.0.0.1, SSE in the recorded fixtures'
shape via tests/scripted_openai.py) run on its own thread and event loop, so one server serves a whole
test module while each test runs its own asyncio client. Per API model: a queue of faults served first
(429 with Retry-After, 500, 503, 401, a drop mid-stream, a stall), a `down` set answering 503, and a
healthy reply that echoes the last user message; a prompt containing "BAD" gets a plain 400. A
request that does not ask to stream (`chat/batch`) gets each reply non-streamed, its fault kept.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from scripted_openai import FakeServer, Reply, text_stream


def error(status: int, message: str, kind: str = "server_error", headers: dict[str, str] | None = None) -> Reply:
    return Reply.json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers)


def rate_limited(retry_after: str) -> Reply:
    return error(429, "Rate limit reached for requests", "requests", {"retry-after": retry_after})


def unauthorized() -> Reply:
    return error(401, "Incorrect API key provided: sk-...0000.", "invalid_request_error")


def dropped(text: str = "this reply will break off mid way", after: int = 3) -> Reply:
    reply = text_stream(text)
    reply.drop_after = after  # the role chunk and two words, then the connection is cut
    return reply


def stalled(text: str = "this reply stalls after two words") -> Reply:
    reply = text_stream(text)
    reply.chunks = reply.chunks[:3]
    reply.stall = True
    return reply


class FakeLLM:
    def __init__(self) -> None:
        self.faults: dict[str, list[Reply]] = {}
        self.down: set[str] = set()
        self.calls: list[tuple[str, float, str]] = []  # (api model, monotonic arrival, last user text)
        self.streamed: dict[str, list[bool]] = {}  # api model -> did each request ask to stream?
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-llm", daemon=True)
        self._server = FakeServer(self._handle)
        self.url = ""

    def __enter__(self) -> "FakeLLM":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.__aenter__(), self._loop).result(10)
        self.url = self._server.url
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._server.__aexit__(None, None, None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def script(self, model: str, *faults: Reply) -> None:
        with self._lock:
            self.faults.setdefault(model, []).extend(faults)

    def calls_to(self, model: str) -> list[tuple[str, float, str]]:
        with self._lock:
            return [c for c in self.calls if c[0] == model]

    def _handle(self, req: Any) -> Reply:
        body = req.json
        model = body["model"]
        said = next((m.get("content") for m in reversed(body["messages"]) if m["role"] == "user"), "")
        if isinstance(said, list):
            said = "".join(part.get("text", "") for part in said)
        with self._lock:
            self.calls.append((model, time.monotonic(), said))
            self.streamed.setdefault(model, []).append(bool(body.get("stream")))
            queue = self.faults.get(model)
            if queue:
                return queue.pop(0)
            if model in self.down:
                return error(503, "The server is overloaded or not ready yet.")
        if "BAD" in said:
            return error(400, "Invalid value for 'temperature'", "invalid_request_error")
        return text_stream(f"{model} answers: {said}")


def config_toml(url: str, models: dict[str, dict[str, Any]], routing: dict[str, Any]) -> str:
    """config.toml: one openai-compatible endpoint at the fake, the given models on it, a [routing] table."""
    lines = ['[providers.fake]', 'kind = "openai-compatible"', f'base-url = "{url}/v1"', ""]
    for name, spec in models.items():
        lines += [f'[models.{name}]', 'provider = "fake"', f'api-model = "{name}"',
                  f'context-window = {spec.get("window", 100_000)}', ""]
    lines.append("[routing]")
    lines += [f"{k} = {_toml(v)}" for k, v in routing.items() if not isinstance(v, dict)]
    for name, spec in models.items():
        limits = {k: v for k, v in spec.items() if k != "window"}
        if limits:
            lines += ["", f"[routing.models.{name}]", *(f"{k} = {_toml(v)}" for k, v in limits.items())]
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)
