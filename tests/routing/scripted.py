"""The router's own input, scripted: an `attempt(model)` callable whose outcomes per model are listed
in advance (a result, or a ProviderError to raise), and an `on_failure` that records what it is told."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from chatd.models import ModelRegistry
from chatd.providers.base import ModelSpec, ProviderError
from chatd.routing import Router, RouterConfig


def err(kind: str, status: int | None = None, retry_after: float | None = None, msg: str = "boom") -> ProviderError:
    return ProviderError(kind, msg, status=status, retry_after=retry_after)  # type: ignore[arg-type]


E500 = lambda: err("server", 500)  # noqa: E731
E401 = lambda: err("auth", 401, msg="invalid api key")  # noqa: E731


@dataclass
class Script:
    outcomes: dict[str, list[Any]]  # per model; the last entry repeats once the list is used up
    calls: list[tuple[str, float]] = field(default_factory=list)  # (model, loop time at call)
    duration: float = 0.0  # each call takes this long (virtual seconds)

    async def __call__(self, model: str) -> Any:
        loop = asyncio.get_running_loop()
        self.calls.append((model, loop.time()))
        todo = self.outcomes.get(model, ["ok:" + model])
        outcome = todo.pop(0) if len(todo) > 1 else todo[0]
        if self.duration:
            await asyncio.sleep(self.duration)
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            outcome = outcome()
            if isinstance(outcome, BaseException):
                raise outcome
        return outcome

    def models(self) -> list[str]:
        return [m for m, _ in self.calls]

    def gaps(self) -> list[float]:
        return [b - a for (_, a), (_, b) in zip(self.calls, self.calls[1:])]


@dataclass
class Told:
    """What on_failure was told: (model, kind, next, delay)."""

    log: list[tuple[str, str, str, float]] = field(default_factory=list)
    waiting: asyncio.Event | None = None

    def __call__(self, model: str, error: ProviderError, action: str, delay: float) -> None:
        self.log.append((model, error.kind, action, delay))
        if self.waiting is not None and "cooling down; waiting" in error.message:
            self.waiting.set()

    def actions(self) -> list[str]:
        return [a for _, _, a, _ in self.log]


def registry(**windows: int) -> ModelRegistry:
    return ModelRegistry([ModelSpec(name=n, provider="fake", api_model=n, context_window=w) for n, w in windows.items()])


def router(seed: int = 1, windows: dict[str, int] | None = None, **config: Any) -> Router:
    reg = registry(**(windows or {m: 100_000 for m in ("a", "b", "c")}))
    return Router(seed, registry=reg, config=RouterConfig(**config))
