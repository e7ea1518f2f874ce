"""What every provider adapter takes and yields: the neutral request, stream events and errors.

A provider turns a `ProviderRequest` (the provider-neutral transcript) into a stream of events.
It never reads configuration or the environment: keys, base URLs and clients are handed to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, AsyncIterator, Callable, Literal, Protocol

import msgspec

from chatd import protocol as p


class ModelSpec(msgspec.Struct, frozen=True):
    """A registry entry. Prices are USD per million tokens."""

    name: str
    provider: str
    api_model: str
    context_window: int = 128_000
    max_output: int = 4_096
    input_price: float = 0.0
    output_price: float = 0.0
    cached_input_price: float = 0.0
    capabilities: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] = {}


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool offered to the model: `parameters` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})


class ProviderRequest(msgspec.Struct):
    """The provider-neutral request. `messages` are stored transcript messages (roles user, assistant,
    tool) whose `parts` carry text, tool calls, tool results and thinking. `options` are camelCase
    sampling options: maxNewTokens, temperature, topP, stop, jsonSchema, jsonMode, reasoningEffort."""

    model: ModelSpec
    system: str | None
    messages: Sequence[p.MessageOut]  # a list, or the history and the running turn joined (context.Joined)
    options: dict[str, Any] = {}
    tools: list[ToolSpec] = []


class TextDelta(msgspec.Struct, frozen=True):
    text: str


class ToolCallEvent(msgspec.Struct, frozen=True):
    """A complete tool call (adapters assemble argument fragments before yielding it)."""

    id: str
    name: str
    arguments: dict[str, Any]


class ThinkingEvent(msgspec.Struct, frozen=True):
    """Reasoning text and/or its signature; kept in the transcript for the provider that made it."""

    text: str = ""
    signature: str | None = None


class UsageEvent(msgspec.Struct, frozen=True):
    usage: p.Usage


class Finish(msgspec.Struct, frozen=True):
    reason: str


Event = TextDelta | ToolCallEvent | ThinkingEvent | UsageEvent | Finish

ErrorKind = Literal[
    "rate_limit", "overloaded", "server", "auth", "bad_request", "context_length",
    "timeout", "connection", "stream",
]


class ProviderError(Exception):
    """A failed provider call, classified so routing can decide: retry, fall over, or give up."""

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status else self.message


class Provider(Protocol):
    """`stream()` yields a reply's events as they arrive. An adapter whose API has a cheaper
    non-streamed call may also define `async complete(request) -> list[Event]`: the same events, all at
    once (see `whole_reply`)."""

    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[Event]: ...


async def whole_reply(provider: Provider, request: ProviderRequest, tick: Callable[[], None]) -> list[Event]:
    """A reply's events when nobody watches it arrive: the provider's `complete()` where it has one,
    else its stream gathered, with `tick()` called per event (the caller's stall guard)."""
    complete = getattr(provider, "complete", None)
    if complete is not None:
        return await complete(request)
    events: list[Event] = []
    async for event in provider.stream(request):
        tick()
        events.append(event)
    return events


def retry_after_seconds(headers: Any) -> float | None:
    """`retry-after-ms` (milliseconds) or `Retry-After` (seconds; an HTTP date is ignored)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value) * scale, 0.0)
        except ValueError:
            continue
    return None


def http_error(status: int, message: str, headers: Any = None, *, context_markers: tuple[str, ...] = (
        "context_length", "context length", "maximum context", "too many tokens", "prompt is too long",
        "exceeds the maximum")) -> ProviderError:
    """Classify an HTTP error status (and message) once, for every adapter."""
    retry_after = retry_after_seconds(headers) if headers is not None else None
    lowered = message.lower()
    if status == 429:
        return ProviderError("rate_limit", message, status=status, retry_after=retry_after)
    if status == 529:
        return ProviderError("overloaded", message, status=status, retry_after=retry_after)
    if status in (401, 403):
        return ProviderError("auth", message, status=status)
    if status in (400, 413, 422) and any(m in lowered for m in context_markers):
        return ProviderError("context_length", message, status=status)
    if status == 408:
        return ProviderError("timeout", message, status=status, retry_after=retry_after)
    if status >= 500:
        return ProviderError("server", message, status=status, retry_after=retry_after)
    return ProviderError("bad_request", message, status=status)


def scrub(text: str, secrets: Any) -> str:
    """Remove every secret (API keys) from text bound for an error message or a log line."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return text


def cost_of(spec: ModelSpec, usage: p.Usage) -> float:
    fresh = max(usage.input_tokens - usage.cached_tokens, 0)
    return (fresh * spec.input_price + usage.cached_tokens * spec.cached_input_price
            + usage.output_tokens * spec.output_price) / 1_000_000
