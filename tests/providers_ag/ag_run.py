"""Driving an adapter against a fake: collect its events (and the ProviderError that ended them, if any)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from chatd import protocol as p
from chatd.providers.base import ModelSpec, ProviderError, ProviderRequest, ToolSpec

CANARY = "canary-KEY-7f3e9a1c5b2d4e6f8a0b"


def run(provider_cls: Any, base_url: str, request: ProviderRequest, *, key: str | None = CANARY,
        timeout: float = 5.0, **kw: Any) -> tuple[list[Any], ProviderError | None]:
    async def go() -> tuple[list[Any], ProviderError | None]:
        events: list[Any] = []
        async with httpx.AsyncClient(timeout=timeout) as http:
            provider = provider_cls(http, base_url=base_url, api_key=key, **kw)
            try:
                async for event in provider.stream(request):
                    events.append(event)
            except ProviderError as err:
                return events, err
        return events, None

    return asyncio.run(go())


def msg(seq: int, role: str, *parts: Any, text: str = "") -> p.MessageOut:
    if not text:
        text = "".join(x.text for x in parts if isinstance(x, p.TextPart))
    return p.MessageOut(seq=seq, role=role, text=text, parts=list(parts))


def user(seq: int, text: str) -> p.MessageOut:
    return msg(seq, "user", p.TextPart(text))


def request(spec: ModelSpec, messages: list[p.MessageOut], *, system: str | None = None,
            tools: list[ToolSpec] | None = None, **options: Any) -> ProviderRequest:
    return ProviderRequest(model=spec, system=system, messages=messages, options=options, tools=tools or [])
