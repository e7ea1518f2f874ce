"""Rate limits: per-model request and token buckets, a shared pause after a 429, and the daemon-wide
cap on requests in flight.

A bucket for a limit of L per window W (a minute) holds at most `burst` = max(1, L/60) and refills at
r = (L·(1 − headroom) − burst) / W. It starts with `burst`, never with a full minute's worth, so no
window of W seconds ever admits more than burst + r·W <= L (the headroom absorbs the network's jitter
between our send and the provider's count).

Token counts are estimates when a request starts (prompt characters / 4 plus the expected output, scaled
by what this model's usage reports have shown so far); when the real usage arrives the bucket is charged
or refunded the difference. A request larger than the burst waits for a full bucket and then runs the
bucket into debt, so a big prompt is slow, never stuck.

Waiters queue FIFO per model and only the head of the queue watches the clock: 10,000 queued batch
prompts cost one timer, not 10,000. The head takes a concurrency slot before it takes its tokens, so
tokens are spent when the request is really sent, not when it joined the queue.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Iterable

import msgspec

_EPS = 1e-9


class ModelLimits(msgspec.Struct, rename="kebab", forbid_unknown_fields=True, omit_defaults=True):
    """Per-model settings, `[routing.models.<name>]` in config.toml (None: the `[routing]` default)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_attempts: int | None = None  # tries on this model before the turn falls over
    stall_timeout: float | None = None  # seconds without a stream event before a try is a timeout
    failure_cooldown: float | None = None  # after its tries are used up on transient errors (0: none)


class Clock:
    """Monotonic seconds and sleeping, from the running event loop (so a virtual-time loop drives it
    in tests). `wall()` turns a monotonic instant into Unix time for clients."""

    def now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def wall(self, instant: float) -> float:
        return time.time() + (instant - self.now())


class TokenBucket:
    __slots__ = ("rate", "burst", "level", "stamp")

    def __init__(self, per_window: float, window: float, headroom: float, now: float) -> None:
        self.burst = max(1.0, per_window / 60.0)
        self.rate = max(per_window * (1.0 - headroom) - self.burst, per_window * 0.5) / window
        self.level = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_time(self, need: float, now: float) -> float:
        """Seconds until `need` (capped at the burst) is available; 0 when it is."""
        self._refill(now)
        short = min(need, self.burst) - self.level
        return 0.0 if short <= _EPS else short / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount  # may go below zero: debt, repaid by refill

    def give(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.burst, self.level + amount)


class _Model:
    """One model's buckets, its FIFO queue, a pause until (a shared Retry-After), and its learned
    ratio of real tokens to estimated ones."""

    __slots__ = ("requests", "tokens", "queue", "hold_until", "ratio")

    def __init__(self, limits: ModelLimits, window: float, headroom: float, now: float) -> None:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self.requests = TokenBucket(rpm, window, headroom, now) if rpm else None
        self.tokens = TokenBucket(tpm, window, headroom, now) if tpm else None
        self.queue = asyncio.Lock()
        self.hold_until = 0.0
        self.ratio = 1.0

    def wait_time(self, need: float, now: float) -> float:
        wait = self.hold_until - now
        if self.requests is not None:
            wait = max(wait, self.requests.wait_time(1, now))
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_time(need, now))
        return wait

    @property
    def limited(self) -> bool:
        return self.requests is not None or self.tokens is not None


class Permit:
    """A request's place: holds a concurrency slot until the context exits; `settle(real_tokens)`
    corrects the token bucket and the model's estimate ratio once the usage is known."""

    __slots__ = ("_limits", "_model", "_raw", "_charged", "_slot")

    def __init__(self, limits: "Limits", model: _Model, raw: int, charged: float) -> None:
        self._limits, self._model, self._raw, self._charged = limits, model, raw, charged
        self._slot = True

    def settle(self, real_tokens: int | None) -> None:
        m = self._model
        if not real_tokens or self._raw <= 0:
            return
        m.ratio = min(4.0, max(0.25, 0.8 * m.ratio + 0.2 * (real_tokens / self._raw)))
        if m.tokens is not None:
            diff = real_tokens - self._charged
            now = self._limits.clock.now()
            m.tokens.take(diff, now) if diff > 0 else m.tokens.give(-diff, now)
        self._charged = real_tokens

    def release(self) -> None:
        if self._slot:
            self._slot = False
            self._limits.slots.release()

    async def __aenter__(self) -> "Permit":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()


class Limits:
    """Every model's limits and the daemon-wide concurrency cap."""

    def __init__(self, *, max_concurrent: int = 64, window: float = 60.0, headroom: float = 0.02,
                 default: ModelLimits | None = None, models: dict[str, ModelLimits] | None = None,
                 clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.window = window
        self.headroom = headroom
        self.default = default or ModelLimits()
        self.config = dict(models or {})
        self.max_concurrent = max_concurrent
        self.slots = asyncio.Semaphore(max_concurrent)
        self._models: dict[str, _Model] = {}
        self._merged: dict[str, ModelLimits] = {}  # settings() per configured model (asked several times a turn)

    def settings(self, model: str) -> ModelLimits:
        """The model's own settings over the defaults (the same object each time: do not modify it)."""
        own = self.config.get(model)
        if own is None:
            return self.default
        merged = self._merged.get(model)
        if merged is None:
            merged = self._merged[model] = ModelLimits(**{
                f: getattr(own, f) if getattr(own, f) is not None else getattr(self.default, f)
                for f in ModelLimits.__struct_fields__})
        return merged

    def _model(self, name: str) -> _Model:
        m = self._models.get(name)
        if m is None:
            m = self._models[name] = _Model(self.settings(name), self.window, self.headroom, self.clock.now())
        return m

    def hold(self, model: str, until: float) -> None:
        """Pause every request to `model` until `until` (a Retry-After applies to the whole daemon)."""
        m = self._model(model)
        m.hold_until = max(m.hold_until, until)

    def estimate(self, model: str, raw_tokens: int) -> float:
        return raw_tokens * self._model(model).ratio

    async def acquire(self, model: str, raw_tokens: int = 0) -> Permit:
        """Wait for a concurrency slot and the model's request and token budget; cancellable throughout."""
        m = self._model(model)
        need = raw_tokens * m.ratio
        if not m.limited and m.hold_until <= self.clock.now() and not m.queue.locked():
            await self.slots.acquire()
            return Permit(self, m, raw_tokens, need)
        async with m.queue:  # FIFO: only the head of the queue waits on the clock
            slot = False
            try:
                while True:
                    now = self.clock.now()
                    wait = m.wait_time(need, now)
                    if wait > 0:
                        await self.clock.sleep(wait)
                        continue
                    if not slot:
                        await self.slots.acquire()
                        slot = True
                        continue  # time passed while we waited for the slot: look again
                    if m.requests is not None:
                        m.requests.take(1, now)
                    if m.tokens is not None:
                        m.tokens.take(need, now)
                    return Permit(self, m, raw_tokens, need)
            except BaseException:
                if slot:
                    self.slots.release()
                raise


def estimate_tokens(texts: Iterable[str], messages: int = 1, max_new_tokens: int | None = None) -> int:
    """A provider-neutral first guess at a request's tokens: characters / 4 plus a little per message,
    plus the expected output (maxNewTokens if given, else 256). `Permit.settle` corrects it."""
    return estimate_chars(sum(len(t) for t in texts), messages, max_new_tokens)


def estimate_chars(chars: int, messages: int = 1, max_new_tokens: int | None = None) -> int:
    """`estimate_tokens` from a character count the caller keeps (a turn must not re-read its history)."""
    return math.ceil(chars / 4) + 4 * messages + (max_new_tokens if max_new_tokens else 256)
