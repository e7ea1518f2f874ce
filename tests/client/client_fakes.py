"""Helpers for the client tests: one fake provider server (OpenAI and Anthropic paths) on a thread, a
daemon pointed at it, and the seed's example programs run as subprocesses with scripted stdin.

The fake is tests/providers/fakes.py's FakeServer (a real HTTP server on 127.0.0.1) running on its own
event loop thread, so a test can block on a subprocess while the daemon streams from it. Replies are
scripted by the test through `FakeProviders.openai` / `.anthropic`: functions of the captured request.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import threading
from typing import Any, Callable

TESTS = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from helpers import DaemonProc, new_daemon  # noqa: E402
from scripted_openai import Captured, FakeServer, Reply, text_stream, tool_call_stream  # noqa: E402,F401

EXAMPLES = pathlib.Path(__file__).resolve().parent / "seed_examples"
Handler = Callable[[Captured], Reply]


def anthropic_text_stream(text: str, input_tokens: int = 11, output_tokens: int = 6) -> Reply:
    """An Anthropic Messages stream in the recorded fixture's shape (anthropic_messages_text_stream.txt)."""

    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data}, separators=(',', ':'))}\n\n".encode()

    chunks = [event("message_start", {"message": {
        "id": "msg_scripted", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-20250514", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
    words = text.split(" ")
    for i, word in enumerate(words):
        chunks.append(event("content_block_delta", {"index": 0, "delta": {
            "type": "text_delta", "text": word + (" " if i < len(words) - 1 else "")}}))
    chunks += [event("content_block_stop", {"index": 0}),
               event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                       "usage": {"output_tokens": output_tokens}}),
               event("message_stop", {})]
    return Reply(chunks=chunks)


def anthropic_error(status: int = 500) -> Reply:
    return Reply.json(status, {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}})


def openai_error(status: int = 500) -> Reply:
    return Reply.json(status, {"error": {"message": "The server had an error", "type": "server_error",
                                         "param": None, "code": None}})


def user_texts(req: Captured) -> list[str]:
    """The user turns of an OpenAI or Anthropic request body, in order."""
    out = []
    for m in req.json["messages"]:
        if m["role"] != "user":
            continue
        content = m["content"]
        if isinstance(content, list):
            content = "".join(b.get("text", "") for b in content if b.get("type") == "text")
        if content:
            out.append(content)
    return out


class FakeProviders:
    """One FakeServer on a private loop thread; `.openai` and `.anthropic` script the replies."""

    def __init__(self) -> None:
        self.openai: Handler = lambda req: text_stream("openai says hi")
        self.anthropic: Handler = lambda req: anthropic_text_stream("claude says hi")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server = FakeServer(self._route)
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self._loop).result(10)

    def _route(self, req: Captured) -> Reply:
        return self.anthropic(req) if req.path.endswith("/messages") else self.openai(req)

    @property
    def requests(self) -> list[Captured]:
        return self.server.requests

    def requests_to(self, provider: str) -> list[Captured]:
        suffix = "/messages" if provider == "anthropic" else "/chat/completions"
        return [r for r in self.server.requests if r.path.endswith(suffix)]

    def env(self) -> dict[str, str]:
        url = self.server.url
        return {"OPENAI_API_KEY": "sk-test-scripted-0000", "OPENAI_BASE_URL": f"{url}/v1",
                "ANTHROPIC_API_KEY": "sk-ant-test-scripted-0000", "ANTHROPIC_BASE_URL": url}

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def start_daemon(tmp_path: pathlib.Path, env: dict[str, str] | None = None, config: str | None = None,
                 seed: int | None = None) -> DaemonProc:
    d = new_daemon(tmp_path, **(env or {}))
    if config is not None:
        os.makedirs(d.paths.config_dir, exist_ok=True)
        pathlib.Path(d.paths.config_file).write_text(config)
    if seed is not None:
        d.extra_args = ["--seed", str(seed)]
    return d.start()


def run_example(name: str, daemon: DaemonProc, lines: list[str], timeout: float = 30) -> str:
    """Run a seed example with `lines` on stdin against `daemon`; its stdout (stderr must be empty)."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], input="".join(x + "\n" for x in lines),
                          env=daemon.env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


def transcript(stdout: str) -> list[str]:
    """The program's output as lines, prompts split off (`You: Assistant: x` -> `You:`, `Assistant: x`)."""
    out: list[str] = []
    for line in stdout.splitlines():
        while line.startswith("You: "):
            out.append("You:")
            line = line[5:]
        if line.strip():
            out.append(line.rstrip())
    return out
