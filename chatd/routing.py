"""Which models a turn tries, in what order: weights, stickiness (`preferModel`) and fallbacks.

`plan()` is pure apart from the seeded random draw, so tests can pin the order with a seed.
"""

from __future__ import annotations

import random
from typing import Sequence

LAST = "last"
WEIGHTED = "weighted"


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
