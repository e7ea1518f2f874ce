"""Scripted OpenAI Chat Completions streams for daemon-level tests, in the exact shape of the recorded
fixtures (`openai_chat_text_stream.txt`, `openai_chat_toolcall_stream.txt`): a role delta, content or
tool-call deltas (arguments in fragments), a finish chunk with an empty delta, the usage chunk with
`choices: []`, then `[DONE]`. Each also carries its non-streamed form in the shape of
`openai_chat_toolcall_nonstream_response.txt`, for requests that do not ask to stream (`chat/batch`).
Served by tests/providers/fakes.py's FakeServer on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "providers"))

from fakes import Captured, FakeServer, Reply  # noqa: E402,F401

_BASE = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1727346182,
         "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_scripted"}


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    return b"data: " + json.dumps({**_BASE, "choices": choices, **extra}, separators=(",", ":")).encode() + b"\n\n"


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _whole(message: dict[str, Any], finish: str, usage: dict[str, int]) -> bytes:
    """The non-streamed chat.completion body for the same reply."""
    return json.dumps({**_BASE, "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", **message}, "logprobs": None, "finish_reason": finish}],
        "usage": usage}, indent=2).encode()


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def text_stream(text: str, prompt_tokens: int = 12, completion_tokens: int = 7) -> Reply:
    chunks = [_chunk([_choice({"role": "assistant", "content": "", "refusal": None})])]
    words = text.split(" ")
    for i, word in enumerate(words):
        chunks.append(_chunk([_choice({"content": word + (" " if i < len(words) - 1 else "")})]))
    chunks.append(_chunk([_choice({}, "stop")]))
    usage = _usage(prompt_tokens, completion_tokens)
    chunks.append(_chunk([], usage=usage))
    chunks.append(b"data: [DONE]\n\n")
    return Reply(chunks=chunks, whole=_whole({"content": text, "refusal": None}, "stop", usage))


def tool_call_stream(calls: list[tuple[str, str, dict[str, Any]]]) -> Reply:
    """calls: (id, name, arguments); each call's arguments arrive in three fragments."""
    chunks = []
    for index, (call_id, name, arguments) in enumerate(calls):
        first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        delta: dict[str, Any] = {"tool_calls": [first]}
        if index == 0:
            delta = {"role": "assistant", "content": None, "tool_calls": [first]}
        chunks.append(_chunk([_choice(delta)]))
        encoded = json.dumps(arguments)
        third = max(len(encoded) // 3, 1)
        for piece in (encoded[:third], encoded[third:2 * third], encoded[2 * third:]):
            chunks.append(_chunk([_choice({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})]))
    chunks.append(_chunk([_choice({}, "tool_calls")]))
    usage = _usage(44, 16)
    chunks.append(_chunk([], usage=usage))
    chunks.append(b"data: [DONE]\n\n")
    message = {"content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {
        "name": name, "arguments": json.dumps(arguments)}} for call_id, name, arguments in calls]}
    return Reply(chunks=chunks, whole=_whole(message, "tool_calls", usage))


def openai_env(server: FakeServer) -> dict[str, str]:
    """Environment that points the daemon's `openai` provider at the fake."""
    return {"OPENAI_API_KEY": "sk-test-scripted-0000", "OPENAI_BASE_URL": f"{server.url}/v1"}
