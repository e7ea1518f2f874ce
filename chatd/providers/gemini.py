"""Google Gemini adapter: the neutral transcript to a `streamGenerateContent?alt=sse` body, and its stream back.

Pure parts: `build_request` (transcript -> JSON body) and `GeminiStreamParser` (SSE data -> neutral events).
`GeminiProvider.stream` is the only I/O. The key travels in the `x-goog-api-key` header, never in the URL,
and is scrubbed from error text (Gemini echoes invalid keys in error bodies).

Transcript mapping:
- roles user/model; `tool` role `ToolResultPart` -> `functionResponse` part in a user turn; adjacent
  same-role turns are merged (parallel calls' responses share one turn, as Gemini requires).
- Gemini function calls carry no id (older models): ids are synthesised from the response id, the call's
  position, name and arguments, so the same stream always yields the same ids. Ids are never sent back:
  Gemini matches responses to calls by name and order.
- `thoughtSignature`: a part's signature is yielded as `ThinkingEvent(signature=...)` just before that part's
  own event, stored as `ThinkingPart(signature, provider="gemini")`, and on the next request put back on
  the function call that follows it in the message (else the text that follows it). Thought summaries
  (`thought: true`) are yielded as `ThinkingEvent(text=...)` and not sent back (Gemini reads nothing from
  unsigned thought text). For Gemini 3 models, a replayed function call with no signature (a call made by
  another provider) gets Google's documented `skip_thought_signature_validator` sentinel.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, AsyncIterator

import httpx
import msgspec

from chatd import protocol as p
from chatd.providers.transport import error_message_of, post_sse
from chatd.providers.base import (
    Event, Finish, ProviderError, ProviderRequest, TextDelta, ThinkingEvent, ToolCallEvent, UsageEvent,
    http_error, scrub,
)

SKIP_SIGNATURE = "skip_thought_signature_validator"
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                  "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
                  "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
                  "IMAGE_SAFETY": "content_filter", "LANGUAGE": "content_filter"}
# The subset of JSON Schema that Gemini's OpenAPI-style `Schema` accepts; other keys are dropped.
SCHEMA_KEYS = frozenset(("type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
                         "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
                         "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
                         "maximum"))
_GEMINI_3 = re.compile(r"(^|/)gemini-[3-9]")
_decode = msgspec.json.decode
_encode = msgspec.json.encode


# ---------------------------------------------------------------- request building
def gemini_schema(schema: Any) -> Any:
    """JSON Schema -> Gemini Schema: unsupported keys dropped, `["x", "null"]` types made `nullable`."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key in ("items",):
            out[key] = gemini_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [gemini_schema(sub) for sub in value]
        elif key == "type" and isinstance(value, list):
            kinds = [k for k in value if k != "null"]
            out[key] = kinds[0] if kinds else "null"
            if "null" in value:
                out["nullable"] = True
        else:
            out[key] = value
    return out


def _response_object(part: p.ToolResultPart) -> dict[str, Any]:
    """functionResponse.response must be an object: Google's convention is {"output": ...} / {"error": ...}."""
    if part.is_error:
        return {"error": part.output}
    if isinstance(part.output, dict):
        return part.output
    return {"output": part.output}


def _signature_targets(parts: list[Any], providers: frozenset[str]) -> dict[int, str]:
    """Which part each stored signature belongs to: the first function call after it (before the next
    signature), else the first text after it, else none (-1: the signature stands alone). Preferring the
    call keeps Gemini 3's rule even when a store puts buffered text between a signature and its call."""
    signed = [i for i, x in enumerate(parts)
              if type(x) is p.ThinkingPart and x.signature and x.provider in providers]
    targets: dict[int, str] = {}
    for n, i in enumerate(signed):
        stop = signed[n + 1] if n + 1 < len(signed) else len(parts)
        span = range(i + 1, stop)
        target = next((j for j in span if type(parts[j]) is p.ToolCallPart and j not in targets), None)
        if target is None:
            target = next((j for j in span if type(parts[j]) is p.TextPart and j not in targets), -1 - i)
        targets[target] = parts[i].signature
    return targets


def _parts(message: p.MessageOut, providers: frozenset[str]) -> list[dict[str, Any]]:
    assistant = message.role == "assistant"
    targets = _signature_targets(message.parts, providers) if assistant else {}
    out: list[dict[str, Any]] = []
    for i, part in enumerate(message.parts):
        kind = type(part)
        signature = targets.get(i)
        if kind is p.ThinkingPart:
            lone = targets.get(-1 - i)
            if lone:  # a signature with no part of its own to ride on: sent back as an empty thought part
                out.append({"text": "", "thought": True, "thoughtSignature": lone})
            continue
        if kind is p.TextPart:
            if not part.text and not signature:
                continue
            piece: dict[str, Any] = {"text": part.text}
        elif kind is p.ToolCallPart:
            if not assistant:
                continue
            piece = {"functionCall": {"name": part.name, "args": part.arguments}}
        elif kind is p.ToolResultPart:
            piece = {"functionResponse": {"name": part.name, "response": _response_object(part)}}
        else:
            continue
        if signature:
            piece["thoughtSignature"] = signature
        out.append(piece)
    if not message.parts and message.text:
        out.append({"text": message.text})
    return out


def build_contents(request: ProviderRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """(system instruction text, alternating user/model contents) for the transcript."""
    providers = frozenset(("gemini", "google", request.model.provider))
    system = request.system or None
    contents: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            system = f"{system}\n\n{message.text}" if system else message.text
            continue
        parts = _parts(message, providers)
        if not parts:
            continue
        role = "model" if message.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if _GEMINI_3.search(request.model.api_model):
        for content in contents:  # Gemini 3 rejects a replayed call with no signature (e.g. from OpenAI)
            if content["role"] != "model" or any("thoughtSignature" in x for x in content["parts"]):
                continue
            call = next((x for x in content["parts"] if "functionCall" in x), None)
            if call is not None:
                call["thoughtSignature"] = SKIP_SIGNATURE
    return system, contents


def build_request(request: ProviderRequest) -> dict[str, Any]:
    """The JSON body for POST .../models/{api_model}:streamGenerateContent?alt=sse."""
    opts = {**request.model.options, **request.options}
    system, contents = build_contents(request)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t.name, "description": t.description, "parameters": gemini_schema(t.parameters)}
            if t.parameters.get("properties") else {"name": t.name, "description": t.description}
            for t in request.tools]}]
    config: dict[str, Any] = {}
    if opts.get("maxNewTokens"):
        config["maxOutputTokens"] = int(opts["maxNewTokens"])
    if opts.get("temperature") is not None:
        config["temperature"] = opts["temperature"]
    if opts.get("topP") is not None:
        config["topP"] = opts["topP"]
    stop = opts.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    schema = opts.get("jsonSchema")
    if isinstance(schema, dict):
        if "schema" in schema and "type" not in schema:  # OpenAI's {"name", "schema", "strict"} wrapper
            schema = schema["schema"]
        config["responseMimeType"] = "application/json"
        config["responseSchema"] = gemini_schema(schema)
    elif opts.get("jsonMode"):
        config["responseMimeType"] = "application/json"
    effort = opts.get("reasoningEffort")
    if effort in THINKING_BUDGETS or isinstance(effort, int):
        budget = effort if isinstance(effort, int) else THINKING_BUDGETS[effort]
        config["thinkingConfig"] = {"thinkingBudget": budget, **({"includeThoughts": True} if budget else {})}
    if config:
        body["generationConfig"] = config
    return body


# ---------------------------------------------------------------- stream parsing
def _retry_delay(error: dict[str, Any]) -> float | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = str(detail.get("retryDelay", ""))
            try:
                return float(delay.rstrip("s"))
            except ValueError:
                return None
    return None


def classify_error(status: int, message: str, error: dict[str, Any], headers: Any = None) -> ProviderError:
    """Gemini's error body -> ProviderError; a bad key (HTTP 400, API_KEY_INVALID) is an auth error."""
    reasons = {d.get("reason") for d in error.get("details") or () if isinstance(d, dict)}
    text = f"gemini: {error.get('status')}: {message}" if error.get("status") else f"gemini: {message}"
    if "API_KEY_INVALID" in reasons or "API key not valid" in message:
        return ProviderError("auth", text, status=status)
    if status == 503 or error.get("status") == "UNAVAILABLE":
        err = ProviderError("overloaded", text, status=status)
    else:
        err = http_error(status, text, headers)
    if err.retry_after is None:
        err.retry_after = _retry_delay(error)
    return err


def error_from_body(status: int, raw: bytes, headers: Any) -> ProviderError:
    message, error = error_message_of(raw)
    return classify_error(status, message, error, headers)


class GeminiStreamParser:
    """`data:` chunks (GenerateContentResponse JSON) -> neutral events. usageMetadata is cumulative: the
    last one is yielded, with the finish reason, by `finish()` once the stream ends."""

    __slots__ = ("_usage", "_reason", "_calls", "_response_id")

    def __init__(self) -> None:
        self._usage: dict[str, Any] | None = None
        self._reason: str | None = None
        self._calls = 0
        self._response_id = ""

    def feed(self, data: str) -> list[Event]:
        if data == "[DONE]":  # OpenAI-style sentinel some proxies append: nothing to parse
            return []
        try:
            obj = _decode(data)
        except msgspec.DecodeError:
            raise ProviderError("stream", f"gemini: malformed stream chunk: {data[:120]!r}") from None
        if type(obj) is list and obj:  # some proxies wrap chunks (and errors) in an array
            obj = obj[0]
        if type(obj) is not dict:
            raise ProviderError("stream", f"gemini: unexpected stream chunk: {data[:120]!r}")
        if "error" in obj:
            error = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
            status = error.get("code") if type(error.get("code")) is int else 500
            raise classify_error(status, str(error.get("message", "")), error)
        usage = obj.get("usageMetadata")
        if usage is not None:
            self._usage = usage
        if "responseId" in obj:
            self._response_id = obj["responseId"]
        out: list[Event] = []
        candidates = obj.get("candidates")
        if not candidates:
            block = (obj.get("promptFeedback") or {}).get("blockReason")
            if block:
                self._reason = "content_filter"
            return out
        candidate = candidates[0]
        content = candidate.get("content")
        if content:
            for part in content.get("parts") or ():
                signature = part.get("thoughtSignature")
                if "text" in part:
                    if part.get("thought"):
                        out.append(ThinkingEvent(text=part["text"], signature=signature))
                        continue
                    if signature:
                        out.append(ThinkingEvent(signature=signature))
                    if part["text"]:
                        out.append(TextDelta(part["text"]))
                elif "functionCall" in part:
                    if signature:
                        out.append(ThinkingEvent(signature=signature))
                    out.append(self._call(part["functionCall"]))
                elif signature:
                    out.append(ThinkingEvent(signature=signature))
        reason = candidate.get("finishReason")
        if reason:
            if reason == "STOP" and self._calls:
                self._reason = "tool_calls"
            else:
                self._reason = FINISH_REASONS.get(reason, reason.lower())
        return out

    def _call(self, call: dict[str, Any]) -> ToolCallEvent:
        name, args = call["name"], call.get("args") or {}
        if type(args) is not dict:
            raise ProviderError("stream", f"gemini: function {name!r} args are not an object")
        ident = call.get("id")
        if not ident:
            seed = _encode([self._response_id, self._calls, name, args])
            ident = "call_" + hashlib.sha256(seed).hexdigest()[:24]
        self._calls += 1
        return ToolCallEvent(id=ident, name=name, arguments=args)

    def finish(self) -> list[Event]:
        """At the end of the stream: usage and the finish reason, or an error if the stream was cut short."""
        if self._reason is None:
            raise ProviderError("stream", "gemini: stream ended without a finishReason")
        u = self._usage or {}
        thoughts = int(u.get("thoughtsTokenCount") or 0)
        usage = p.Usage(input_tokens=int(u.get("promptTokenCount") or 0) + int(u.get("toolUsePromptTokenCount") or 0),
                        output_tokens=int(u.get("candidatesTokenCount") or 0) + thoughts,
                        cached_tokens=int(u.get("cachedContentTokenCount") or 0), reasoning_tokens=thoughts)
        return [UsageEvent(usage), Finish(self._reason)]


# ---------------------------------------------------------------- the provider
class GeminiProvider:
    """Streams Gemini generateContent. `base_url` is e.g. https://generativelanguage.googleapis.com
    (the adapter adds /v1beta/models/...)."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None,
                 name: str = "gemini", extra_headers: dict[str, str] | None = None) -> None:
        self.name = name
        self._http = http
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._headers = {"content-type": "application/json", **(extra_headers or {})}
        if api_key:
            self._headers["x-goog-api-key"] = api_key

    def url_for(self, api_model: str) -> str:
        model = api_model if api_model.startswith(("models/", "tunedModels/")) else f"models/{api_model}"
        return f"{self._base}/v1beta/{model}:streamGenerateContent?alt=sse"

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Event]:
        parser = GeminiStreamParser()
        chunks = post_sse(self._http, self.url_for(request.model.api_model), headers=self._headers,
                          body=build_request(request), secrets=(self._key,), error_from_body=error_from_body,
                          provider=self.name)
        try:
            async for _event, data in chunks:
                for out in parser.feed(data):
                    yield out
            tail = parser.finish()
        except ProviderError as err:
            err.message = scrub(err.message, (self._key,))
            err.args = (err.message,)
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ProviderError("stream", f"{self.name}: malformed stream chunk ({type(exc).__name__})") from None
        finally:
            await chunks.aclose()
        for out in tail:
            yield out
