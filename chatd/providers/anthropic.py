"""Anthropic Messages adapter: the neutral transcript to a `/v1/messages` body, and its event stream back.

Pure parts: `build_request` (transcript -> JSON body) and `AnthropicStreamParser` (SSE events -> neutral
events). `AnthropicProvider.stream` is the only I/O: one streamed POST over an injected httpx client.
The HTTP part every SSE provider shares (status classification, error bodies scrubbed of the key,
httpx's exceptions mapped to `ProviderError`) is `transport.post_sse`.

Transcript mapping:
- `system` is top level; stored `system` role messages are appended to it.
- assistant `ToolCallPart` -> `tool_use` block; `tool` role `ToolResultPart` -> `tool_result` block in a user
  message; adjacent same-role messages are merged, so roles alternate and parallel results share one message.
- `ThinkingPart(provider="anthropic")` with a signature -> `thinking` block (a `redacted_thinking:` prefix on
  the signature marks a redacted block); thinking from other providers is dropped.
- Tool-call ids from other providers are kept when Anthropic accepts them (`[A-Za-z0-9_-]{1,64}`), else
  replaced by a stable hash, the same for the call and its result.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, AsyncIterator

import httpx
import msgspec

from chatd import protocol as p
from chatd.providers.base import (
    Event, Finish, ProviderError, ProviderRequest, TextDelta, ThinkingEvent, ToolCallEvent, UsageEvent,
    http_error, scrub,
)
from chatd.providers.transport import error_message_of, post_sse

ANTHROPIC_VERSION = "2023-06-01"
REDACTED_PREFIX = "redacted_thinking:"
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "max"}
# Models that take no temperature/top_p ("deprecated for this model") and think adaptively: Opus 4.7+
# and generation 5 on. A model's `sampling` option (true/false) overrides the guess.
_MODERN = re.compile(r"claude-(?:[a-z]+-)?(?:[5-9]|[1-9]\d)(?:\D|$)|claude-opus-4-(?:[7-9]|\d\d)|claude-(?:mythos|fable)")
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "refusal": "content_filter", "pause_turn": "pause", "model_context_window_exceeded": "length"}
# Anthropic's error `type` -> the HTTP status it stands for, so in-stream errors classify like HTTP ones.
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "timeout_error": 408, "overloaded_error": 529}
_ID_OK = re.compile(r"[A-Za-z0-9_-]{1,64}")
_decode = msgspec.json.decode
_encode = msgspec.json.encode


# ---------------------------------------------------------------- shared HTTP + SSE plumbing
def modern_model(api_model: str) -> bool:
    return bool(_MODERN.search(api_model))


def tool_use_id(raw: str) -> str:
    """An id Anthropic accepts, stable for the same input (so a call and its result still match)."""
    if _ID_OK.fullmatch(raw):
        return raw
    return "toolu_" + hashlib.sha256(raw.encode()).hexdigest()[:24]


def _result_block(part: p.ToolResultPart) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id(part.call_id)}
    out = part.output
    content = out if isinstance(out, str) else "" if out is None else _encode(out).decode()
    if content:  # an empty result is sent without content rather than as an empty text
        block["content"] = content
    if part.is_error:
        block["is_error"] = True
    return block


def _blocks(message: p.MessageOut, providers: frozenset[str]) -> tuple[str, list[dict[str, Any]]]:
    """(role, content blocks) for one stored message."""
    blocks: list[dict[str, Any]] = []
    if message.role == "tool":
        for part in message.parts:
            if type(part) is p.ToolResultPart:
                blocks.append(_result_block(part))
        return "user", blocks
    assistant = message.role == "assistant"
    for part in message.parts:
        kind = type(part)
        if kind is p.TextPart:
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif kind is p.ToolCallPart and assistant:
            blocks.append({"type": "tool_use", "id": tool_use_id(part.id), "name": part.name,
                           "input": part.arguments})
        elif kind is p.ThinkingPart and assistant:
            if part.signature and part.provider in providers:
                if part.signature.startswith(REDACTED_PREFIX):
                    blocks.append({"type": "redacted_thinking", "data": part.signature[len(REDACTED_PREFIX):]})
                else:
                    blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
        elif kind is p.ToolResultPart:  # a result stored on a user message: still a tool_result
            blocks.append(_result_block(part))
    if not message.parts and message.text:
        blocks.append({"type": "text", "text": message.text})
    return ("assistant" if assistant else "user"), blocks


def build_messages(request: ProviderRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """(system prompt, alternating messages) for the transcript."""
    providers = frozenset(("anthropic", request.model.provider))
    system = request.system or None
    merged: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            system = f"{system}\n\n{message.text}" if system else message.text
            continue
        role, blocks = _blocks(message, providers)
        if not blocks:
            continue
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"].extend(blocks)
        else:
            merged.append({"role": role, "content": blocks})
    for message in merged:
        content = message["content"]
        if message["role"] == "user":
            # tool_result blocks must open the user message that answers the tool_use turn
            content.sort(key=lambda b: b["type"] != "tool_result")
        if len(content) == 1 and content[0]["type"] == "text":
            message["content"] = content[0]["text"]
    return system, merged


def build_request(request: ProviderRequest) -> dict[str, Any]:
    """The JSON body for POST /v1/messages (streaming)."""
    spec, opts = request.model, {**request.model.options, **request.options}
    system, messages = build_messages(request)
    max_tokens = int(opts.get("maxNewTokens") or spec.max_output)
    body: dict[str, Any] = {"model": spec.api_model, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                         for t in request.tools]
    modern = modern_model(spec.api_model) if opts.get("sampling") is None else not opts["sampling"]
    thinking = False
    effort = opts.get("reasoningEffort")
    if modern and effort in EFFORTS:  # adaptive thinking, steered by effort
        body["thinking"] = {"type": "adaptive"}
        body["output_config"] = {"effort": EFFORTS[effort]}
        thinking = True
    elif effort in THINKING_BUDGETS or type(effort) is int:
        budget = effort if type(effort) is int else THINKING_BUDGETS[effort]
        budget = min(budget, max_tokens - 1)
        if budget >= 1024:  # Anthropic's minimum; below it thinking is left off
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            thinking = True
    # Newer models reject sampling parameters outright; with thinking, a changed temperature is refused.
    if not modern and not thinking and opts.get("temperature") is not None:
        body["temperature"] = opts["temperature"]
    if not modern and opts.get("topP") is not None and (not thinking or opts["topP"] >= 0.95):
        body["top_p"] = opts["topP"]
    stop = opts.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    schema = opts.get("jsonSchema")
    if isinstance(schema, dict):  # structured outputs; OpenAI's {"name", "schema"} wrapper accepted
        schema = schema["schema"] if "schema" in schema and "type" not in schema else schema
        body.setdefault("output_config", {})["format"] = {"type": "json_schema", "schema": schema}
    body["stream"] = True
    return body


# ---------------------------------------------------------------- stream parsing
def stream_error(error: Any) -> ProviderError:
    """An in-stream `error` event, classified as the HTTP status it stands for (no status: none was sent)."""
    if not isinstance(error, dict):
        return ProviderError("stream", f"anthropic: malformed error event: {error!r}"[:300])
    etype, message = str(error.get("type", "error")), str(error.get("message", ""))
    err = http_error(ERROR_STATUS.get(etype, 500), f"{etype}: {message}")
    err.status = None
    return err


class AnthropicStreamParser:
    """Messages stream events -> neutral events. Text streams as it arrives; tool calls and thinking blocks
    are yielded whole at their `content_block_stop`; usage and the finish reason at `message_stop`."""

    __slots__ = ("_blocks", "_usage", "_stop", "done")

    def __init__(self) -> None:
        self._blocks: dict[int, list[Any]] = {}  # index -> [type, parts, id/signature, name]
        self._usage: dict[str, int] = {}
        self._stop: str | None = None
        self.done = False

    def feed(self, event: str | None, data: str) -> list[Event]:
        if data == "[DONE]":  # OpenAI-style sentinel some proxies append: nothing to parse
            return []
        try:
            obj = _decode(data)
        except msgspec.DecodeError:
            raise ProviderError("stream", f"anthropic: malformed stream chunk: {data[:120]!r}") from None
        if type(obj) is not dict:
            raise ProviderError("stream", f"anthropic: unexpected stream chunk: {data[:120]!r}")
        kind = obj.get("type", event)
        if kind == "content_block_delta":
            delta = obj["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                return [TextDelta(delta["text"])] if delta["text"] else []
            block = self._blocks.get(obj["index"])
            if block is None:
                raise ProviderError("stream", "anthropic: delta for a block that never started")
            if dtype == "input_json_delta":
                block[1].append(delta["partial_json"])
            elif dtype == "thinking_delta":
                block[1].append(delta["thinking"])
            elif dtype == "signature_delta":
                block[2] = delta["signature"]
            return []
        if kind == "content_block_start":
            return self._start(obj["index"], obj["content_block"])
        if kind == "content_block_stop":
            return self._stop_block(obj["index"])
        if kind == "message_start":
            self._take_usage(obj["message"].get("usage"))
            return []
        if kind == "message_delta":
            self._take_usage(obj.get("usage"))
            self._stop = (obj.get("delta") or {}).get("stop_reason") or self._stop
            return []
        if kind == "message_stop":
            self.done = True
            u = self._usage
            cached = u.get("cache_read_input_tokens", 0)
            # Anthropic's input_tokens exclude cache reads and writes; the neutral count includes them
            total_in = u.get("input_tokens", 0) + cached + u.get("cache_creation_input_tokens", 0)
            usage = p.Usage(input_tokens=total_in, output_tokens=u.get("output_tokens", 0), cached_tokens=cached)
            reason = self._stop or "stop"
            return [UsageEvent(usage), Finish(STOP_REASONS.get(reason, reason))]
        if kind == "error":
            raise stream_error(obj.get("error"))
        return []  # ping, and event types added later: ignored, as Anthropic asks

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key, value in usage.items():
                if type(value) is int:  # cumulative: the latest value wins
                    self._usage[key] = value

    def _start(self, index: int, block: dict[str, Any]) -> list[Event]:
        btype = block.get("type")
        if btype == "text":
            self._blocks[index] = ["text", [], None, None]
            return [TextDelta(block["text"])] if block.get("text") else []
        if btype == "tool_use":
            initial = block.get("input")
            parts = [_encode(initial).decode()] if initial else []
            self._blocks[index] = ["tool_use", parts, block["id"], block["name"]]
        elif btype == "thinking":
            self._blocks[index] = ["thinking", [block.get("thinking", "")], block.get("signature"), None]
        elif btype == "redacted_thinking":
            self._blocks[index] = ["redacted", [], REDACTED_PREFIX + block.get("data", ""), None]
        else:  # server tools and future block types: tracked so their deltas are accepted, then ignored
            self._blocks[index] = [btype, [], None, None]
        return []

    def _stop_block(self, index: int) -> list[Event]:
        block = self._blocks.pop(index, None)
        if block is None:
            return []
        btype, parts, ident, name = block
        if btype == "tool_use":
            text = "".join(parts).strip()
            try:
                args = _decode(text) if text else {}
            except msgspec.DecodeError:
                raise ProviderError("stream", f"anthropic: tool {name!r} arguments are not valid JSON") from None
            if type(args) is not dict:
                raise ProviderError("stream", f"anthropic: tool {name!r} arguments are not an object")
            return [ToolCallEvent(id=ident, name=name, arguments=args)]
        if btype == "thinking":
            return [ThinkingEvent(text="".join(parts), signature=ident)]
        if btype == "redacted":
            return [ThinkingEvent(text="", signature=ident)]
        return []


# ---------------------------------------------------------------- the provider
def error_from_body(status: int, raw: bytes, headers: Any) -> ProviderError:
    message, error = error_message_of(raw)
    etype = error.get("type")
    text = f"anthropic: {etype}: {message}" if etype else f"anthropic: {message}"
    return http_error(status, text, headers)


class AnthropicProvider:
    """Streams Anthropic Messages. `base_url` is e.g. https://api.anthropic.com (no /v1)."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None,
                 name: str = "anthropic", extra_headers: dict[str, str] | None = None) -> None:
        self.name = name
        self._http = http
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._key = api_key
        self._headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json",
                         "accept": "text/event-stream", **(extra_headers or {})}
        if api_key:
            self._headers["x-api-key"] = api_key

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Event]:
        parser = AnthropicStreamParser()
        chunks = post_sse(self._http, self._url, headers=self._headers, body=build_request(request),
                          secrets=(self._key,), error_from_body=error_from_body, provider=self.name)
        try:
            async for event, data in chunks:
                for out in parser.feed(event, data):
                    yield out
                if parser.done:
                    break
        except ProviderError as err:
            err.message = scrub(err.message, (self._key,))
            err.args = (err.message,)
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ProviderError("stream", f"{self.name}: malformed stream event ({type(exc).__name__})") from None
        finally:
            await chunks.aclose()
        if not parser.done:
            raise ProviderError("stream", f"{self.name}: stream ended before message_stop")
