"""Which models a turn tries, in what order, and how failures move it along.

`plan()` orders the candidates (weights, stickiness via `preferModel`). `run()` drives one model call
through that plan: it calls `attempt(model)` for a candidate, records every try as a `protocol.Attempt`,
tells the caller about each failure (so clients see retries and fallbacks live), and moves on when a
candidate fails. It knows nothing of HTTP: failures arrive as classified `ProviderError`s.
"""

from __future__ import annotations

import random
import time
from typing import Awaitable, Callable, Sequence, TypeVar

from chatd import protocol as p
from chatd.providers.base import ProviderError

LAST = "last"
WEIGHTED = "weighted"

T = TypeVar("T")


class AllModelsFailed(Exception):
    def __init__(self, attempts: list[p.Attempt]) -> None:
        reasons = "; ".join(f"{a.model}: {a.error}" for a in attempts)
        super().__init__(f"every model failed ({reasons})" if attempts else "no model to try")
        self.attempts = attempts


class Router:
    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def plan(
        self,
        models: Sequence[str],
        weights: Sequence[float] | None,
        prefer: str,
        last_model: str | None,
    ) -> list[str]:
        """The ordered candidates: the first is tried first, the rest are fallbacks."""
        models = list(dict.fromkeys(models))
        if prefer not in (LAST, WEIGHTED):
            return [prefer] + [m for m in models if m != prefer]
        if prefer == LAST and last_model is not None and last_model in models:
            return [last_model] + [m for m in models if m != last_model]
        first = self._draw(models, weights)
        return [first] + [m for m in models if m != first]

    def _draw(self, models: list[str], weights: Sequence[float] | None) -> str:
        if len(models) == 1 or not weights or len(weights) != len(models) or sum(weights) <= 0:
            return models[0]
        return self._rng.choices(models, weights=weights, k=1)[0]

    async def run(
        self,
        plan: Sequence[str],
        attempt: Callable[[str], Awaitable[T]],
        on_failure: Callable[[str, ProviderError, str], None],
        attempts: list[p.Attempt],
    ) -> tuple[str, T]:
        """Call `attempt(model)` along the plan until one succeeds; returns (model, its result).

        Every try is appended to `attempts`. `on_failure(model, error, next_action)` is called for each
        failed try, with next_action "fallback" or "give up". Raises AllModelsFailed when none succeeds.
        """
        for i, model in enumerate(plan):
            t0 = time.perf_counter()
            try:
                result = await attempt(model)
            except ProviderError as err:
                attempts.append(p.Attempt(model=model, outcome="error", error=str(err),
                                          latency_ms=(time.perf_counter() - t0) * 1000))
                on_failure(model, err, "fallback" if i + 1 < len(plan) else "give up")
                continue
            attempts.append(p.Attempt(model=model, outcome="ok", latency_ms=(time.perf_counter() - t0) * 1000))
            return model, result
        raise AllModelsFailed(attempts)
