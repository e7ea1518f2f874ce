"""Shared bits for provider tests: neutral requests, collecting a stream, running a coroutine."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from chatd import protocol as p
from chatd.config import HttpSettings, make_http_client
from chatd.models import ModelRegistry
from chatd.providers.base import ProviderError, ProviderRequest, ToolSpec

REGISTRY = ModelRegistry()
WEATHER = ToolSpec(name="get_weather", description="", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}})


def msg(role: str, *parts: Any, seq: int = 0) -> p.MessageOut:
    parts_ = [p.TextPart(x) if isinstance(x, str) else x for x in parts]
    text = "".join(x.text for x in parts_ if isinstance(x, p.TextPart))
    return p.MessageOut(seq=seq, role=role, text=text, parts=parts_)


def request(model: str = "gpt-4o", *messages: p.MessageOut, system: str | None = None,
            tools: list[ToolSpec] | None = None, **options: Any) -> ProviderRequest:
    spec = REGISTRY.get(model)
    return ProviderRequest(model=spec, system=system, messages=list(messages) or [msg("user", "Hello!")],
                           options=options, tools=tools or [])


async def collect(provider: Any, req: ProviderRequest) -> tuple[list[Any], ProviderError | None]:
    """Every event until the end or a ProviderError (returned, so tests can check partial output)."""
    events: list[Any] = []
    try:
        async for ev in provider.stream(req):
            events.append(ev)
    except ProviderError as err:
        return events, err
    return events, None


def client(transport: str = "httpx", read_timeout: float = 10.0) -> httpx.AsyncClient:
    """The client the daemon makes (`config.make_http_client`), with either transport."""
    return make_http_client(HttpSettings(read_timeout=read_timeout, connect_timeout=5.0, transport=transport))


def run(coro: Any) -> Any:
    return asyncio.run(coro)
