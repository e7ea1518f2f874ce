"""Weighted first picks match the weights (chi-square over 2,000 draws), are reproducible under a seed,
and stickiness ("last") holds while the model is healthy."""

from __future__ import annotations

from collections import Counter

import pytest
from scripted import router

from chatd.routing import LAST, WEIGHTED, Router

MODELS = ["a", "b", "c"]
WEIGHTS = [0.6, 0.3, 0.1]
CHI2_DF2_P001 = 13.816  # chi-square critical value, 2 degrees of freedom, p = 0.001


def chi_square(picks: Counter, n: int) -> float:
    expected = [n * w / sum(WEIGHTS) for w in WEIGHTS]
    return sum((picks[m] - e) ** 2 / e for m, e in zip(MODELS, expected))


@pytest.mark.parametrize("prefer", [WEIGHTED, LAST])  # a first turn under "last" has no last model: by weight
def test_2000_first_picks_match_the_weights(prefer):
    r = Router(seed=2024)
    picks = Counter(r.plan(MODELS, WEIGHTS, prefer, None)[0] for _ in range(2000))
    assert chi_square(picks, 2000) < CHI2_DF2_P001, picks
    assert set(picks) == set(MODELS)


def test_draws_are_deterministic_under_a_seed_and_differ_between_seeds():
    def draws(seed):
        r = Router(seed=seed)
        return [r.plan(MODELS, WEIGHTS, WEIGHTED, None)[0] for _ in range(200)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_a_zero_weight_is_never_drawn_first_but_stays_a_fallback():
    r = Router(seed=1)
    plans = [r.plan(MODELS, [1, 1, 0], WEIGHTED, None) for _ in range(500)]
    assert all(pl[0] != "c" for pl in plans) and all("c" in pl for pl in plans)


def test_last_sticks_while_healthy_and_redraws_among_healthy_models_when_it_cools_down():
    r = router(seed=3)
    assert all(r.plan(MODELS, WEIGHTS, LAST, "c")[0] == "c" for _ in range(100))
    r.cool("c", 60, "auth", "401")
    plans = [r.plan(MODELS, WEIGHTS, LAST, "c") for _ in range(100)]
    assert all(pl[0] in ("a", "b") and pl[-1] == "c" for pl in plans)  # cooling: last in line


def test_a_named_model_comes_first_with_the_list_as_fallbacks():
    r = Router(seed=1)
    assert r.plan(MODELS, WEIGHTS, "b", "a") == ["b", "a", "c"]
