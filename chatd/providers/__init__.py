"""Provider adapters: one module per wire format, all speaking the neutral events of `base.py`.

`build_providers(config, http)` turns the configured endpoints (a `chatd.config.Config`, taken by
shape: providers never import configuration) into provider objects keyed by endpoint name, the name
`ModelSpec.provider` refers to. Only here is a key revealed, to hand it to its adapter.
"""

from __future__ import annotations

from typing import Any

import httpx

from chatd.providers.base import Provider
from chatd.providers.echo import EchoProvider


def build_providers(config: Any, http: httpx.AsyncClient) -> dict[str, Provider]:
    """One provider per usable endpoint (a key is present, or it is a keyless local server), plus `echo`."""
    from chatd.providers.anthropic import AnthropicProvider
    from chatd.providers.gemini import GeminiProvider
    from chatd.providers.openai_chat import COMPAT, OpenAIChatProvider
    from chatd.providers.openai_responses import OpenAIProvider

    out: dict[str, Provider] = {"echo": EchoProvider()}
    for name, ep in config.endpoints.items():
        if not ep.usable:
            continue
        key = ep.api_key.reveal() if ep.api_key is not None else None
        common = dict(base_url=ep.base_url, api_key=key, name=name, extra_headers=dict(ep.headers) or None)
        if ep.kind == "openai":
            out[name] = OpenAIProvider(http, **common)
        elif ep.kind == "anthropic":
            out[name] = AnthropicProvider(http, **common)
        elif ep.kind == "gemini":
            out[name] = GeminiProvider(http, **common)
        elif ep.kind == "openai-compatible":
            out[name] = OpenAIChatProvider(http, **common, dialect=ep.dialect or COMPAT)
    return out
