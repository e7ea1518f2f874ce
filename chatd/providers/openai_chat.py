"""OpenAI Chat Completions (and every OpenAI-compatible server): request building, stream parsing, one POST.

Pure parts: `build_request(request, dialect)` makes the JSON body from the neutral transcript, and
`ChatStream.feed(data)` turns one SSE `data:` payload into neutral events (`ChatStream.end()` closes the
turn); `completion_events(doc)` does the same for a whole non-streamed reply, through the same state.
`OpenAIChatProvider.stream()` is one streamed POST over the injected client (`transport.post_sse`), raw
byte chunks into `SSEParser`; `complete()` is one non-streamed POST (what `chat/batch` uses: no deltas to forward,
so the cheaper request). `error_from_body()` is shared with the Responses adapter.

Errors, mapped once here: HTTP status -> `base.http_error` with the provider's own message; an `error`
object inside a 200 stream, a malformed chunk, or EOF before a finish -> ProviderError("stream");
httpx timeouts -> "timeout", other transport failures -> "connection" (or "stream" once bytes arrived).
Every message is scrubbed of the key.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator

import httpx
import msgspec

from chatd import protocol as p
from chatd.providers.base import (
    Event, Finish, ProviderError, ProviderRequest, TextDelta, ThinkingEvent, ToolCallEvent, UsageEvent,
    http_error, scrub,
)
from chatd.providers.transport import post_json, post_sse


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one server family differs from api.openai.com in what it accepts."""

    system_role: str = "developer"  # OpenAI's current name; compat servers want "system"
    include_usage: bool = True  # send stream_options.include_usage
    max_tokens_field: str = "max_completion_tokens"  # compat servers still want "max_tokens"
    tool_id_style: str = "any"  # "any" keeps ids (<=40 chars); "alnum9" for Mistral's 9-char ids


OPENAI = Dialect()
COMPAT = Dialect(system_role="system", max_tokens_field="max_tokens")

_REASONING_DROPS = ("temperature", "top_p")  # o-series and gpt-5 reject sampling knobs


# ---------------------------------------------------------------- request
def build_request(request: ProviderRequest, dialect: Dialect = OPENAI, *, stream: bool = True) -> dict[str, Any]:
    """The Chat Completions JSON body for a neutral request (pure); `stream=False` asks for one JSON reply."""
    spec = request.model
    opts = {**spec.options, **request.options}
    body: dict[str, Any] = {"model": spec.api_model, "messages": build_messages(request, dialect)}
    if request.tools:
        body["tools"] = [_tool(t) for t in request.tools]
    if stream:
        body["stream"] = True
        if dialect.include_usage:
            body["stream_options"] = {"include_usage": True}
    reasoning = "reasoning" in spec.capabilities
    if opts.get("maxNewTokens") is not None:
        body[dialect.max_tokens_field] = int(opts["maxNewTokens"])
    if opts.get("temperature") is not None and not reasoning:
        body["temperature"] = opts["temperature"]
    if opts.get("topP") is not None and not reasoning:
        body["top_p"] = opts["topP"]
    if opts.get("stop"):
        stop = opts["stop"]
        body["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if opts.get("jsonSchema"):
        body["response_format"] = {"type": "json_schema", "json_schema": _json_schema(opts["jsonSchema"])}
    elif opts.get("jsonMode"):
        body["response_format"] = {"type": "json_object"}
    if opts.get("reasoningEffort") and reasoning:
        body["reasoning_effort"] = opts["reasoningEffort"]
    return body


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Accept either OpenAI's wrapper ({name, schema, strict}) or a bare JSON Schema."""
    if "schema" in schema and "name" in schema:
        return schema
    return {"name": schema.get("title", "response"), "schema": schema}


def _tool(tool: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters
    return {"type": "function", "function": fn}


def tool_output_text(part: p.ToolResultPart) -> str:
    out = part.output
    text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, separators=(",", ":"))
    return f"Error: {text}" if part.is_error else text


class IdMap:
    """Tool-call ids made valid for the target server, consistently for a call and its result.

    Ids from other providers (Anthropic `toolu_...`, Gemini none at all) are kept when the target
    accepts them, and replaced by a deterministic one when missing, too long, or the wrong shape."""

    def __init__(self, style: str) -> None:
        self.style = style
        self._map: dict[str, str] = {}
        self._n = 0

    def get(self, old: str) -> str:
        new = self._map.get(old)
        if new is None:
            new = self._map[old] = self._fresh(old)
        return new

    def _fresh(self, old: str) -> str:
        self._n += 1
        if self.style == "alnum9":
            if len(old) == 9 and old.isalnum() and old.isascii():
                return old
            digest = hashlib.sha256(f"{old}/{self._n}".encode()).hexdigest()
            return digest[:9]
        if old and len(old) <= 40 and old.isascii():
            return old
        return f"call_{self._n}_{hashlib.sha256(old.encode()).hexdigest()[:12]}"


def build_messages(request: ProviderRequest, dialect: Dialect = OPENAI) -> list[dict[str, Any]]:
    """The neutral transcript as Chat Completions messages.

    Assistant tool calls become `tool_calls` (arguments JSON-encoded), tool results become `tool`
    messages right after them; thinking is dropped (Chat Completions takes none back); a call left
    unanswered gets an error result so the server accepts the history; a result whose call is gone
    becomes user text."""
    ids = IdMap(dialect.tool_id_style)
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": dialect.system_role, "content": request.system})
    pending: dict[str, str] = {}  # new call id -> tool name, awaiting a result
    for msg in request.messages:
        parts = msg.parts
        if len(parts) == 1 and type(parts[0]) is p.TextPart:  # most of a history: one text, no calls or results
            if pending:
                _close_pending(out, pending)
            text = parts[0].text
            if msg.role != "assistant":
                out.append({"role": dialect.system_role if msg.role == "system" else "user", "content": text})
            elif text:
                out.append({"role": "assistant", "content": text})
            continue
        texts = [x.text for x in msg.parts if isinstance(x, p.TextPart)]
        if not msg.parts and msg.text:
            texts = [msg.text]
        results = [x for x in msg.parts if isinstance(x, p.ToolResultPart)]
        if msg.role == "assistant":
            _close_pending(out, pending)
            calls = [x for x in msg.parts if isinstance(x, p.ToolCallPart)]
            entry: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                entry["tool_calls"] = []
                for call in calls:
                    new_id = ids.get(call.id or f"missing-{len(pending)}-{call.name}")
                    pending[new_id] = call.name
                    entry["tool_calls"].append({"id": new_id, "type": "function", "function": {
                        "name": call.name,
                        "arguments": json.dumps(call.arguments, ensure_ascii=False, separators=(",", ":"))}})
            elif entry["content"] is None:
                continue  # a thinking-only message: nothing this API can take
            out.append(entry)
            continue
        for res in results:
            new_id = ids.get(res.call_id)
            if new_id in pending:
                del pending[new_id]
                out.append({"role": "tool", "tool_call_id": new_id, "content": tool_output_text(res)})
            else:
                texts.insert(0, f"[result of tool {res.name}]: {tool_output_text(res)}")
        if msg.role == "tool" and not texts:
            continue
        _close_pending(out, pending)
        if texts or msg.role in ("user", "system"):
            role = dialect.system_role if msg.role == "system" else "user"
            out.append({"role": role, "content": "\n".join(texts) if len(texts) > 1 else (texts[0] if texts else "")})
    _close_pending(out, pending)
    return out


def _close_pending(out: list[dict[str, Any]], pending: dict[str, str]) -> None:
    for call_id in pending:
        out.append({"role": "tool", "tool_call_id": call_id, "content": "Error: this tool call was not answered"})
    pending.clear()


# ---------------------------------------------------------------- stream parsing
class _Fn(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolDelta(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _Fn | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolDelta] | None = None
    reasoning_content: Any = None  # DeepSeek, vLLM
    reasoning: Any = None  # OpenRouter, Groq


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None  # vLLM sends null on the usage chunk
    usage: dict[str, Any] | None = None
    error: Any = None
    x_groq: dict[str, Any] | None = None


class _WholeChoice(msgspec.Struct):
    """A non-streamed choice: its `message` has the fields of a stream delta, complete."""

    message: _Delta | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_WholeChoice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_completion = msgspec.json.Decoder(_Completion).decode
_FINISH = {"tool_calls": "tool_calls", "function_call": "tool_calls"}


def usage_from(u: dict[str, Any]) -> p.Usage:
    """Normalise OpenAI-style usage (and DeepSeek's cache fields) to input/output/cached/reasoning."""
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    cached = pd.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0
    return p.Usage(input_tokens=int(u.get("prompt_tokens") or 0), output_tokens=int(u.get("completion_tokens") or 0),
                   cached_tokens=int(cached), reasoning_tokens=int(cd.get("reasoning_tokens") or 0))


def error_text(err: Any) -> str:
    """The provider's own message from an error object or body (dict, string, or a list of them)."""
    if isinstance(err, list) and err:
        err = err[0]
    if isinstance(err, dict):
        inner = err.get("error", err)
        if isinstance(inner, dict):
            msg = inner.get("message") or inner.get("msg") or inner.get("detail")
            if msg:
                return str(msg)
            return json.dumps(inner)[:500]
        if isinstance(inner, str):
            return inner
        if err.get("message"):
            return str(err["message"])
    return str(err)[:500]


class ChatStream:
    """Turns Chat Completions `data:` payloads into neutral events; one per streamed response.

    Tool-call fragments are concatenated by index and yielded as one ToolCallEvent each when the
    choice finishes; reasoning deltas are gathered into one ThinkingEvent before the first text."""

    __slots__ = ("calls", "finish", "done", "thinking", "_n")

    def __init__(self) -> None:
        self.calls: dict[int, list[Any]] = {}  # index -> [id, name, [argument fragments]]
        self.finish: str | None = None
        self.done = False
        self.thinking: list[str] = []
        self._n = 0

    def feed(self, data: str) -> list[Event]:
        if data[:6] == "[DONE]":
            self.done = True
            return []
        try:
            chunk = _decode_chunk(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise ProviderError("stream", f"malformed stream chunk ({err}): {data[:120]!r}") from None
        return self.take(chunk)

    def take(self, chunk: _Chunk) -> list[Event]:
        """The events of one decoded chunk."""
        if chunk.error is not None:
            raise ProviderError("stream", f"error mid-stream: {error_text(chunk.error)}")
        out: list[Event] = []
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                r = delta.reasoning_content or delta.reasoning
                if r and isinstance(r, str):
                    self.thinking.append(r)
                if delta.content:
                    if self.thinking:
                        out.append(self._flush_thinking())
                    out.append(TextDelta(delta.content))
                if delta.refusal:
                    out.append(TextDelta(delta.refusal))
                    self.finish = "refusal"
                if delta.tool_calls:
                    self._add_calls(delta.tool_calls)
            if choice.finish_reason:
                if self.finish != "refusal":
                    self.finish = _FINISH.get(choice.finish_reason, choice.finish_reason)
                out.extend(self._flush_calls())
        usage = chunk.usage or (chunk.x_groq or {}).get("usage")
        if usage:
            out.append(UsageEvent(usage_from(usage)))
        return out

    def _add_calls(self, deltas: list[_ToolDelta]) -> None:
        for i, tc in enumerate(deltas):
            index = tc.index if tc.index is not None else (len(self.calls) if tc.id else max(self.calls, default=i))
            slot = self.calls.get(index)
            if slot is None or (tc.id and slot[0] and tc.id != slot[0]):
                if slot is not None:  # a new call reusing the index: keep both
                    index = max(self.calls) + 1
                slot = self.calls[index] = [tc.id, None, []]
            fn = tc.function
            if fn is not None:
                if fn.name:
                    slot[1] = fn.name
                if fn.arguments:
                    slot[2].append(fn.arguments)

    def _flush_thinking(self) -> ThinkingEvent:
        text = "".join(self.thinking)
        self.thinking = []
        return ThinkingEvent(text=text)

    def _flush_calls(self) -> list[Event]:
        out: list[Event] = [self._flush_thinking()] if self.thinking else []
        for index in sorted(self.calls):
            call_id, name, frags = self.calls[index]
            raw = "".join(frags).strip() or "{}"
            try:
                args = json.loads(raw)
            except ValueError:
                raise ProviderError("stream", f"tool call {name!r} arguments are not valid JSON: {raw[:120]!r}") from None
            if not isinstance(args, dict):
                args = {"value": args}
            self._n += 1
            out.append(ToolCallEvent(id=call_id or f"call_{self._n}", name=name or "", arguments=args))
        self.calls.clear()
        return out

    def end(self) -> list[Event]:
        """At end of stream: the Finish event, or an error if the model never finished."""
        out = self._flush_calls()
        if self.finish is None:
            if not self.done:
                raise ProviderError("stream", "stream ended before the model finished (no finish_reason)")
            self.finish = "tool_calls" if any(isinstance(e, ToolCallEvent) for e in out) else "stop"
        out.append(Finish(self.finish))
        return out


def completion_events(raw: bytes) -> list[Event]:
    """A whole non-streamed Chat Completions reply (the JSON body) as the events its stream would have
    given: thinking, text, tool calls, usage, then Finish. Parsed by the same `ChatStream`, so a reply
    means the same thing either way; a body that is not such a reply is a `stream` error."""
    try:
        whole = _decode_completion(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ProviderError("stream", f"malformed reply ({err}): {raw[:120]!r}") from None
    state = ChatStream()
    state.done = True  # the reply is complete even if a server leaves finish_reason out
    choices = [_Choice(delta=c.message, finish_reason=c.finish_reason) for c in whole.choices or ()]
    out = state.take(_Chunk(choices=choices, usage=whole.usage, error=whole.error))
    return out + state.end()


# ---------------------------------------------------------------- I/O
def error_from_body(status: int, raw: bytes, headers: Any) -> ProviderError:
    """An OpenAI(-compatible) error body, classified by status."""
    try:
        message = error_text(json.loads(raw))
    except ValueError:
        message = raw.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    return http_error(status, message, headers)


def auth_headers(api_key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if extra:
        headers.update(extra)
    return headers


class OpenAIStreamingProvider:
    """What the OpenAI adapters share: an injected client, a URL under the base, bearer auth, one streamed
    POST whose SSE events feed a parser, and keys scrubbed from whatever leaves. Subclasses name the path,
    build the body and make the parser (anything with `feed(event, data)`, `done` and `end()`)."""

    path = ""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None, name: str = "openai",
                 extra_headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.name = name
        self.url = base_url.rstrip("/") + self.path
        self._key = api_key
        self._headers = auth_headers(api_key, extra_headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.url!r})"

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        raise NotImplementedError

    def parser(self) -> Any:
        raise NotImplementedError

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Event]:
        body = self.body(request)
        state = self.parser()
        try:
            async with aclosing(post_sse(self.http, self.url, body=body, headers=self._headers, secrets=(self._key,),
                                         error_from_body=error_from_body, provider=self.name)) as events:
                async for event, data in events:
                    for ev in state.feed(event, data):
                        yield ev
                    if state.done:
                        break
            for ev in state.end():
                yield ev
        except Exception as err:
            raise scrubbed(err, self._key) from None


class OpenAIChatProvider(OpenAIStreamingProvider):
    """Chat Completions over an injected client; `dialect` adapts it to OpenAI-compatible servers."""

    path = "/chat/completions"

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None, name: str = "openai",
                 extra_headers: dict[str, str] | None = None, dialect: Dialect = OPENAI) -> None:
        super().__init__(http, base_url=base_url, api_key=api_key, name=name, extra_headers=extra_headers)
        self.dialect = dialect
        self._json_headers = {**self._headers, "Accept": "application/json"}

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        return build_request(request, self.dialect)

    def parser(self) -> Any:
        return _ChatEvents()

    async def complete(self, request: ProviderRequest) -> list[Event]:
        """The whole reply from one non-streamed POST, as the events `stream()` would have yielded."""
        try:
            raw = await post_json(self.http, self.url, body=build_request(request, self.dialect, stream=False),
                                  headers=self._json_headers, secrets=(self._key,), error_from_body=error_from_body,
                                  provider=self.name)
            return completion_events(raw)
        except Exception as err:
            raise scrubbed(err, self._key) from None


class _ChatEvents:
    """ChatStream behind the (event, data) interface: Chat Completions streams have no event names."""

    __slots__ = ("_s",)

    def __init__(self) -> None:
        self._s = ChatStream()

    def feed(self, _event: str | None, data: str) -> list[Event]:
        return self._s.feed(data)

    @property
    def done(self) -> bool:
        return self._s.done

    def end(self) -> list[Event]:
        return self._s.end()


def scrubbed(err: Exception, *secrets: str | None) -> ProviderError:
    """The one exception type that leaves an adapter, its message free of keys (a server may echo
    them back inside a stream). An unexpected exception is a bug, reported as a stream error."""
    if isinstance(err, ProviderError):
        return ProviderError(err.kind, scrub(err.message, secrets), status=err.status, retry_after=err.retry_after)
    return ProviderError("stream", scrub(f"unexpected {type(err).__name__}: {err}", secrets))
