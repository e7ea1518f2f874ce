"""The model registry: names and aliases to provider, API model id, window, prices and capabilities.

`BUILTIN` is the table shipped with chatd (prices: USD per million tokens, from each provider's
public price page; `cached_input_price` is the cache-read price). config.toml adds and overrides
entries (`chatd.config`). OpenAI models with `options["api"] == "responses"` go through the Responses
API (reasoning items survive tool rounds); the rest use Chat Completions.
"""

from __future__ import annotations

from typing import Iterable

from chatd.errors import ModelNotFound
from chatd.providers.base import ModelSpec

ECHO = ModelSpec(
    name="echo", provider="echo", api_model="echo", context_window=1_000_000, max_output=1_000_000,
    capabilities=("streaming", "offline"), aliases=("offline",),
)

_CHAT = ("streaming", "tools", "json")
_VISION = (*_CHAT, "vision")
_REASON = (*_VISION, "reasoning")
_RESPONSES = {"api": "responses"}


def _m(name: str, provider: str, api_model: str, window: int, max_out: int, price_in: float, price_out: float,
       price_cached: float, caps: tuple[str, ...], aliases: tuple[str, ...] = (), **options) -> ModelSpec:
    return ModelSpec(name=name, provider=provider, api_model=api_model, context_window=window, max_output=max_out,
                     input_price=price_in, output_price=price_out, cached_input_price=price_cached,
                     capabilities=caps, aliases=aliases, options=options)


BUILTIN: tuple[ModelSpec, ...] = (
    ECHO,
    # OpenAI: Chat Completions
    _m("gpt-4o-mini", "openai", "gpt-4o-mini", 128_000, 16_384, 0.15, 0.60, 0.075, _VISION),
    _m("gpt-4o", "openai", "gpt-4o", 128_000, 16_384, 2.50, 10.00, 1.25, _VISION),
    _m("gpt-4.1", "openai", "gpt-4.1", 1_047_576, 32_768, 2.00, 8.00, 0.50, _VISION),
    _m("gpt-4.1-mini", "openai", "gpt-4.1-mini", 1_047_576, 32_768, 0.40, 1.60, 0.10, _VISION),
    _m("gpt-4.1-nano", "openai", "gpt-4.1-nano", 1_047_576, 32_768, 0.10, 0.40, 0.025, _VISION),
    # OpenAI: reasoning models over the Responses API
    _m("o3", "openai", "o3", 200_000, 100_000, 2.00, 8.00, 0.50, _REASON, **_RESPONSES),
    _m("o4-mini", "openai", "o4-mini", 200_000, 100_000, 1.10, 4.40, 0.275, _REASON, **_RESPONSES),
    _m("gpt-5", "openai", "gpt-5", 400_000, 128_000, 1.25, 10.00, 0.125, _REASON, **_RESPONSES),
    _m("gpt-5-mini", "openai", "gpt-5-mini", 400_000, 128_000, 0.25, 2.00, 0.025, _REASON, **_RESPONSES),
    _m("gpt-5-nano", "openai", "gpt-5-nano", 400_000, 128_000, 0.05, 0.40, 0.005, _REASON, **_RESPONSES),
    # Anthropic (cached = cache-read price)
    _m("claude-4-sonnet", "anthropic", "claude-sonnet-4-20250514", 200_000, 64_000, 3.00, 15.00, 0.30, _REASON,
       ("claude-sonnet-4",)),
    _m("claude-sonnet-4.5", "anthropic", "claude-sonnet-4-5-20250929", 200_000, 64_000, 3.00, 15.00, 0.30, _REASON,
       ("claude-4.5-sonnet", "claude-sonnet-4-5", "claude-sonnet")),
    _m("claude-opus-4.1", "anthropic", "claude-opus-4-1-20250805", 200_000, 32_000, 15.00, 75.00, 1.50, _REASON,
       ("claude-4.1-opus", "claude-opus-4-1")),
    _m("claude-opus-4.5", "anthropic", "claude-opus-4-5-20251101", 200_000, 64_000, 5.00, 25.00, 0.50, _REASON,
       ("claude-4.5-opus", "claude-opus-4-5", "claude-opus")),
    _m("claude-haiku-4.5", "anthropic", "claude-haiku-4-5-20251001", 200_000, 64_000, 1.00, 5.00, 0.10, _REASON,
       ("claude-4.5-haiku", "claude-haiku-4-5", "claude-haiku")),
    # Google Gemini (prices for prompts up to 200k tokens)
    _m("gemini-2.0-flash", "gemini", "gemini-2.0-flash", 1_048_576, 8_192, 0.10, 0.40, 0.025, _VISION),
    _m("gemini-2.5-pro", "gemini", "gemini-2.5-pro", 1_048_576, 65_536, 1.25, 10.00, 0.125, _REASON),
    _m("gemini-2.5-flash", "gemini", "gemini-2.5-flash", 1_048_576, 65_536, 0.30, 2.50, 0.03, _REASON),
    _m("gemini-2.5-flash-lite", "gemini", "gemini-2.5-flash-lite", 1_048_576, 65_536, 0.10, 0.40, 0.01, _REASON),
    # Llama 3.3 70B on Groq: the cheapest and fastest hosted copy with a stable id and a free tier;
    # the Together copy is there by name for whoever has that key instead.
    _m("llama-3.3-70b", "groq", "llama-3.3-70b-versatile", 131_072, 32_768, 0.59, 0.79, 0.59, _CHAT,
       ("llama-3.3-70b-groq",)),
    _m("llama-3.3-70b-together", "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", 131_072, 8_192,
       0.88, 0.88, 0.88, _CHAT),
    _m("deepseek-chat", "deepseek", "deepseek-chat", 128_000, 8_192, 0.28, 0.42, 0.028, _CHAT),
    _m("mistral-large", "mistral", "mistral-large-latest", 128_000, 8_192, 2.00, 6.00, 2.00, _CHAT),
)


class ModelRegistry:
    def __init__(self, specs: Iterable[ModelSpec] = BUILTIN) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._aliases: dict[str, str] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: ModelSpec) -> None:
        """Add or replace an entry (config overrides a built-in of the same name)."""
        old = self._specs.get(spec.name)
        if old is not None:
            for alias in old.aliases:
                self._aliases.pop(alias, None)
        self._specs[spec.name] = spec
        for alias in spec.aliases:
            self._aliases[alias] = spec.name

    def get(self, name: str) -> ModelSpec:
        spec = self._specs.get(name) or self._specs.get(self._aliases.get(name, ""))
        if spec is None:
            raise ModelNotFound(name)
        return spec

    def __contains__(self, name: str) -> bool:
        return name in self._specs or name in self._aliases

    def all(self) -> list[ModelSpec]:
        return list(self._specs.values())
