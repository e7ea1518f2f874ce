"""OpenAI Responses API: request building, named-event stream parsing, and the `openai` provider that
picks Chat Completions or Responses per model (`ModelSpec.options["api"] == "responses"`).

Used for the reasoning models (o-series, gpt-5 family): Responses hands back reasoning items (summary
and, with `store: false`, encrypted content) that can be passed back on the next request, so reasoning
survives tool-call rounds. chatd keeps the whole transcript itself, so requests are stateless
(`store: false`, no `previous_response_id`).
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import httpx
import msgspec

from chatd import protocol as p
from chatd.providers.base import (
    Event, Finish, ProviderError, ProviderRequest, TextDelta, ThinkingEvent, ToolCallEvent, UsageEvent,
)
from chatd.providers.openai_chat import (
    IdMap, OpenAIChatProvider, OpenAIStreamingProvider, _json_schema, error_text, tool_output_text,
)


# ---------------------------------------------------------------- request
def build_request(request: ProviderRequest, provider: str = "openai") -> dict[str, Any]:
    """The Responses JSON body for a neutral request (pure). `provider` names whose thinking is kept."""
    spec = request.model
    opts = {**spec.options, **request.options}
    reasoning = "reasoning" in spec.capabilities
    body: dict[str, Any] = {"model": spec.api_model, "input": build_input(request, provider)}
    if request.system:
        body["instructions"] = request.system
    if request.tools:
        body["tools"] = [{"type": "function", "name": t.name, "description": t.description or None,
                          "parameters": t.parameters, "strict": False} for t in request.tools]
        for tool in body["tools"]:
            if tool["description"] is None:
                del tool["description"]
    body["stream"] = True
    body["store"] = False
    if reasoning:
        body["include"] = ["reasoning.encrypted_content"]
        body["reasoning"] = {"summary": "auto"}
        if opts.get("reasoningEffort"):
            body["reasoning"]["effort"] = opts["reasoningEffort"]
    if opts.get("maxNewTokens") is not None:
        body["max_output_tokens"] = int(opts["maxNewTokens"])
    if not reasoning:
        if opts.get("temperature") is not None:
            body["temperature"] = opts["temperature"]
        if opts.get("topP") is not None:
            body["top_p"] = opts["topP"]
    if opts.get("jsonSchema"):
        body["text"] = {"format": {"type": "json_schema", **_json_schema(opts["jsonSchema"])}}
    elif opts.get("jsonMode"):
        body["text"] = {"format": {"type": "json_object"}}
    return body


def build_input(request: ProviderRequest, provider: str = "openai") -> list[dict[str, Any]]:
    """The neutral transcript as Responses input items (messages, function calls and their outputs,
    and this provider's own reasoning items; other providers' thinking is dropped)."""
    ids = IdMap("any")
    items: list[dict[str, Any]] = []
    answered: set[str] = set()
    called: list[str] = []
    for msg in request.messages:
        texts = [x.text for x in msg.parts if isinstance(x, p.TextPart)] or ([msg.text] if not msg.parts and msg.text else [])
        if msg.role == "assistant":
            for part in msg.parts:
                if isinstance(part, p.ThinkingPart) and part.provider == provider and part.signature:
                    rid, _, enc = part.signature.partition(":")
                    summary = [{"type": "summary_text", "text": part.text}] if part.text else []
                    items.append({"type": "reasoning", "id": rid, "summary": summary, "encrypted_content": enc})
            if texts:
                items.append({"role": "assistant", "content": "".join(texts)})
            for part in msg.parts:
                if isinstance(part, p.ToolCallPart):
                    call_id = ids.get(part.id or f"missing-{len(called)}")
                    called.append(call_id)
                    items.append({"type": "function_call", "call_id": call_id, "name": part.name,
                                  "arguments": json.dumps(part.arguments, ensure_ascii=False, separators=(",", ":"))})
            continue
        for part in msg.parts:
            if isinstance(part, p.ToolResultPart):
                call_id = ids.get(part.call_id)
                if call_id in called and call_id not in answered:
                    answered.add(call_id)
                    items.append({"type": "function_call_output", "call_id": call_id, "output": tool_output_text(part)})
                else:
                    texts.insert(0, f"[result of tool {part.name}]: {tool_output_text(part)}")
        if texts:
            items.append({"role": "user", "content": "\n".join(texts)})
    for call_id in called:  # every call needs an output or the API refuses the input
        if call_id not in answered:
            idx = next(i for i, it in enumerate(items) if it.get("call_id") == call_id)
            items.insert(idx + 1, {"type": "function_call_output", "call_id": call_id,
                                   "output": "Error: this tool call was not answered"})
    return items


# ---------------------------------------------------------------- stream parsing
class _REvent(msgspec.Struct):
    type: str = ""
    delta: Any = None
    item: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    output_index: int | None = None
    message: Any = None
    code: Any = None
    error: Any = None


class _TextDelta(msgspec.Struct):
    delta: str = ""


_decode_event = msgspec.json.Decoder(_REvent).decode
_decode_delta = msgspec.json.Decoder(_TextDelta).decode  # the hot path: most events are text deltas


def usage_from(u: dict[str, Any]) -> p.Usage:
    return p.Usage(input_tokens=int(u.get("input_tokens") or 0), output_tokens=int(u.get("output_tokens") or 0),
                   cached_tokens=int((u.get("input_tokens_details") or {}).get("cached_tokens") or 0),
                   reasoning_tokens=int((u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0))


class ResponsesStream:
    """Turns Responses SSE events into neutral events; `end()` insists on a terminal event."""

    __slots__ = ("done", "calls", "refused", "finish")

    def __init__(self) -> None:
        self.done = False
        self.calls = 0
        self.refused = False
        self.finish: str | None = None

    def feed(self, event: str | None, data: str) -> list[Event]:
        try:
            if event == "response.output_text.delta":
                delta = _decode_delta(data).delta
                return [TextDelta(delta)] if delta else []
            ev = _decode_event(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise ProviderError("stream", f"malformed stream event ({err}): {data[:120]!r}") from None
        kind = ev.type or event or ""
        if kind == "response.output_text.delta":
            return [TextDelta(ev.delta)] if ev.delta else []
        if kind == "response.refusal.delta":
            self.refused = True
            return [TextDelta(ev.delta)] if ev.delta else []
        if kind == "response.output_item.done" and ev.item:
            return self._item(ev.item)
        if kind in ("response.completed", "response.incomplete"):
            return self._terminal(kind, ev.response or {})
        if kind == "response.failed":
            err = (ev.response or {}).get("error") or {}
            raise ProviderError("stream", f"response failed: {error_text(err) if err else 'no reason given'}")
        if kind == "error":
            msg = ev.message or error_text(ev.error) if (ev.message or ev.error) else data[:200]
            raise ProviderError("stream", f"error mid-stream: {msg}")
        return []

    def _item(self, item: dict[str, Any]) -> list[Event]:
        kind = item.get("type")
        if kind == "function_call":
            self.calls += 1
            raw = (item.get("arguments") or "").strip() or "{}"
            try:
                args = json.loads(raw)
            except ValueError:
                raise ProviderError("stream", f"tool call arguments are not valid JSON: {raw[:120]!r}") from None
            if not isinstance(args, dict):
                args = {"value": args}
            return [ToolCallEvent(id=item.get("call_id") or item.get("id") or f"call_{self.calls}",
                                  name=item.get("name") or "", arguments=args)]
        if kind == "reasoning":
            text = "\n\n".join(s.get("text", "") for s in item.get("summary") or () if isinstance(s, dict))
            enc = item.get("encrypted_content")
            signature = f"{item.get('id', '')}:{enc}" if enc else None
            return [ThinkingEvent(text=text, signature=signature)] if text or signature else []
        return []

    def _terminal(self, kind: str, response: dict[str, Any]) -> list[Event]:
        self.done = True
        out: list[Event] = []
        if response.get("usage"):
            out.append(UsageEvent(usage_from(response["usage"])))
        if kind == "response.incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason") or "incomplete"
            self.finish = "length" if reason == "max_output_tokens" else reason
        elif self.refused:
            self.finish = "refusal"
        else:
            self.finish = "tool_calls" if self.calls else "stop"
        return out

    def end(self) -> list[Event]:
        if not self.done or self.finish is None:
            raise ProviderError("stream", "stream ended before the response completed")
        return [Finish(self.finish)]


# ---------------------------------------------------------------- I/O
class OpenAIResponsesProvider(OpenAIStreamingProvider):
    path = "/responses"

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        return build_request(request, self.name)

    def parser(self) -> Any:
        return ResponsesStream()


class OpenAIProvider:
    """The `openai` provider: Chat Completions by default, Responses for models whose
    `options["api"]` is "responses". One key, one base URL, one name for both."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None, name: str = "openai",
                 extra_headers: dict[str, str] | None = None) -> None:
        self.name = name
        self.chat = OpenAIChatProvider(http, base_url=base_url, api_key=api_key, name=name,
                                       extra_headers=extra_headers)
        self.responses = OpenAIResponsesProvider(http, base_url=base_url, api_key=api_key, name=name,
                                                 extra_headers=extra_headers)

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r})"

    def stream(self, request: ProviderRequest) -> AsyncIterator[Event]:
        api = request.model.options.get("api")
        return (self.responses if api == "responses" else self.chat).stream(request)
