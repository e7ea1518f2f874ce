"""The model registry: names and aliases to provider, API model id, window, prices and capabilities."""

from __future__ import annotations

from typing import Iterable

from chatd.errors import ModelNotFound
from chatd.providers.base import ModelSpec

ECHO = ModelSpec(
    name="echo", provider="echo", api_model="echo", context_window=1_000_000, max_output=1_000_000,
    capabilities=("streaming", "offline"), aliases=("offline",),
)

BUILTIN: tuple[ModelSpec, ...] = (ECHO,)


class ModelRegistry:
    def __init__(self, specs: Iterable[ModelSpec] = BUILTIN) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._aliases: dict[str, str] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: ModelSpec) -> None:
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
