"""What every provider adapter takes and yields: the neutral request, stream events and errors.

A provider turns a `ProviderRequest` (the provider-neutral transcript) into a stream of events.
It never reads configuration or the environment: keys, base URLs and clients are handed to it.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Literal, Protocol

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


class ProviderRequest(msgspec.Struct):
    model: ModelSpec
    system: str | None
    messages: list[p.MessageOut]
    options: dict[str, Any] = {}


class TextDelta(msgspec.Struct, frozen=True):
    text: str


class UsageEvent(msgspec.Struct, frozen=True):
    usage: p.Usage


class Finish(msgspec.Struct, frozen=True):
    reason: str


Event = TextDelta | UsageEvent | Finish

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
    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[Event]: ...


def cost_of(spec: ModelSpec, usage: p.Usage) -> float:
    fresh = max(usage.input_tokens - usage.cached_tokens, 0)
    return (fresh * spec.input_price + usage.cached_tokens * spec.cached_input_price
            + usage.output_tokens * spec.output_price) / 1_000_000
