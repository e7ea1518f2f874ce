"""Which models a turn tries, in what order, and how failures move it along.

`plan()` orders the candidates (weights, stickiness via `preferModel`, cooling models last). `run()`
drives one model call through that plan: it calls `attempt(model)` under the model's rate limits,
records every try as a `protocol.Attempt`, tells the caller about each failure (so clients see retries,
fallbacks and waits live), and decides what follows from the failure's class:

    rate_limit, overloaded, server,      retry the same model with exponential backoff and jitter (at
    timeout, connection, stream          least Retry-After), up to its attempt limit; then the model
                                         cools down briefly and the turn falls over
    auth (401/403)                       the model cools down for minutes (doubling while it repeats,
                                         never for good); the turn falls over
    context_length                       fall over, only to models with a larger context window
    bad_request                          no retry, no fallback: the turn's error

Cooldowns live in the Router, one per daemon, so every conversation shares them; they expire. When
every candidate is cooling down the turn waits for the first to come back (at most `max-wait` in all,
announced with its ETA) instead of failing; the wait is a plain asyncio sleep, so cancel works.
Time comes from a `Clock` (the event loop's), so tests drive it with virtual time.
It knows nothing of HTTP: failures arrive as classified `ProviderError`s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import tomllib
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import msgspec

from chatd import protocol as p
from chatd.providers.base import ProviderError
from chatd.ratelimit import Clock, Limits, ModelLimits

log = logging.getLogger("chatd.routing")

LAST = "last"
WEIGHTED = "weighted"
TRANSIENT = frozenset({"rate_limit", "overloaded", "server", "timeout", "connection", "stream"})

T = TypeVar("T")
OnFailure = Callable[[str, ProviderError, str, float], None]


class RouterConfig(msgspec.Struct, rename="kebab", forbid_unknown_fields=True, omit_defaults=True):
    """The `[routing]` table of config.toml (seconds throughout); `models` is `[routing.models.<name>]`."""

    max_concurrent: int = 64  # requests in flight, daemon-wide
    max_attempts: int = 3  # tries per model before falling over
    backoff_base: float = 0.5  # first retry delay; doubles per retry, with jitter
    backoff_max: float = 20.0
    max_retry_after: float = 30.0  # a longer Retry-After cools the model down and falls over at once
    auth_cooldown: float = 300.0  # after a 401/403; doubles while it repeats, up to an hour
    failure_cooldown: float = 30.0  # after a model used up its tries on transient errors
    max_wait: float = 120.0  # how long a turn waits, in all, while every model cools down
    stall_timeout: float = 120.0  # seconds without a stream event before a try counts as a timeout
    requests_per_minute: float | None = None  # defaults for every model
    tokens_per_minute: float | None = None
    window: float = 60.0  # the length of "a minute" (tests scale time with it)
    headroom: float = 0.02  # fraction of each limit kept free for network jitter
    models: dict[str, ModelLimits] = {}

    @classmethod
    def from_toml(cls, table: Any) -> tuple["RouterConfig", list[str]]:
        """The config from a parsed `[routing]` table, or the defaults and a warning if it is invalid."""
        if table is None:
            return cls(), []
        try:
            return msgspec.convert(table, cls), []
        except msgspec.ValidationError as err:
            return cls(), [f"routing: {err}; the [routing] table is ignored"]

    @classmethod
    def load(cls, path: str | None) -> tuple["RouterConfig", list[str]]:
        """The `[routing]` table of the config.toml at `path` (a missing or broken file: defaults)."""
        try:
            with open(path or "", "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError):
            return cls(), []  # load_config reports problems with the file itself
        return cls.from_toml(data.get("routing"))


class AllModelsFailed(Exception):
    def __init__(self, attempts: list[p.Attempt], message: str | None = None) -> None:
        reasons = "; ".join(f"{a.model}: {a.error}" for a in attempts if a.outcome != "ok")
        if message is None:
            message = f"every model failed ({reasons})" if attempts else "no model to try"
        super().__init__(message)
        self.attempts = attempts


class RequestRejected(AllModelsFailed):
    """A 400 that is not about length: the request itself is wrong, so no other model is tried."""


class _Cooldown(msgspec.Struct):
    until: float
    kind: str
    reason: str
    strikes: int = 1


class Router:
    def __init__(self, seed: int | None = None, *, registry: Any = None, config: RouterConfig | None = None,
                 clock: Clock | None = None) -> None:
        self._rng = random.Random(seed)
        self._jitter = random.Random(None if seed is None else seed ^ 0x5EED)
        self.registry = registry  # for context windows; None: every window counts as equal
        self.clock = clock or Clock()
        self._cool: dict[str, _Cooldown] = {}
        self.configure(config or RouterConfig())

    def configure(self, config: RouterConfig) -> None:
        self.config = config
        default = ModelLimits(requests_per_minute=config.requests_per_minute,
                              tokens_per_minute=config.tokens_per_minute, max_attempts=config.max_attempts,
                              stall_timeout=config.stall_timeout, failure_cooldown=config.failure_cooldown)
        self.limits = Limits(max_concurrent=config.max_concurrent, window=config.window, headroom=config.headroom,
                             default=default, models=config.models, clock=self.clock)

    # ------------------------------------------------------------ health
    def cooling(self, model: str, now: float | None = None) -> _Cooldown | None:
        c = self._cool.get(model)
        if c is None:
            return None
        if c.until - (self.clock.now() if now is None else now) <= 1e-3:
            return None
        return c

    def cooldown_until(self, model: str) -> float | None:
        """Unix time the model's cooldown ends, or None when it is healthy (for `models/list`)."""
        c = self.cooling(model)
        return None if c is None else self.clock.wall(c.until)

    def cool(self, model: str, seconds: float, kind: str, reason: str) -> None:
        now = self.clock.now()
        old = self._cool.get(model)
        until = max(now + seconds, old.until if old is not None and old.until > now else 0.0)
        self._cool[model] = _Cooldown(until, kind, reason, (old.strikes + 1) if old is not None else 1)
        log.info("model %s cools down for %.1fs (%s)", model, until - now, kind)

    def _healthy(self, model: str) -> None:
        self._cool.pop(model, None)

    def settings(self, model: str) -> ModelLimits:
        """The model's settings. An offline model (echo) fails deterministically, so unless configured
        otherwise it gets one try and no cooldown: retrying or waiting for it cannot help."""
        s = self.limits.settings(model)
        if model not in self.config.models and self.registry is not None and model in self.registry \
                and "offline" in self.registry.get(model).capabilities:
            s = msgspec.structs.replace(s, max_attempts=1, failure_cooldown=0.0)
        return s

    def stall_timeout(self, model: str) -> float | None:
        return self.settings(model).stall_timeout

    def _window(self, model: str) -> int:
        if self.registry is None:
            return 0
        try:
            return self.registry.get(model).context_window
        except Exception:
            return 0

    # ------------------------------------------------------------ planning
    def plan(
        self,
        models: Sequence[str],
        weights: Sequence[float] | None,
        prefer: str,
        last_model: str | None,
    ) -> list[str]:
        """The ordered candidates: the first is tried first, the rest are fallbacks (cooling ones last)."""
        models = list(dict.fromkeys(models))
        now = self.clock.now()
        healthy = [m for m in models if self.cooling(m, now) is None]
        if prefer not in (LAST, WEIGHTED):
            first = prefer
        elif prefer == LAST and last_model is not None and last_model in healthy:
            first = last_model
        else:
            first = self._draw(models, weights, healthy or models)
        rest = [m for m in models if m != first]
        return [first] + [m for m in rest if m in healthy] + [m for m in rest if m not in healthy]

    def _draw(self, models: list[str], weights: Sequence[float] | None, among: list[str]) -> str:
        if not weights or len(weights) != len(models) or sum(weights) <= 0:
            return among[0]
        w = dict(zip(models, weights))
        pool = [m for m in among if w[m] > 0] or among
        if len(pool) == 1:
            return pool[0]
        return self._rng.choices(pool, weights=[w[m] for m in pool], k=1)[0]

    # ------------------------------------------------------------ running
    async def run(
        self,
        plan: Sequence[str],
        attempt: Callable[[str], Awaitable[T]],
        on_failure: OnFailure,
        attempts: list[p.Attempt],
        *,
        tokens: int = 0,
        usage: Callable[[T], int | None] | None = None,
    ) -> tuple[str, T]:
        """Call `attempt(model)` along the plan until one succeeds; returns (model, its result).

        Every try is appended to `attempts`. `on_failure(model, error, next, delay_s)` is called for each
        failed or skipped try and for each wait, with next "retry" (the same model, or the first to come
        back when all cool down, after `delay_s`), "fallback" or "give up". `tokens` is the request's raw
        token estimate for the rate limits and `usage(result)` its real token count. Raises
        AllModelsFailed (RequestRejected for a bad request) when no model answers.
        """
        order = list(dict.fromkeys(plan))
        tries = dict.fromkeys(order, 0)
        floor = -1  # after a context-length error: only larger windows
        deadline = self.clock.now() + self.config.max_wait  # waiting for recoveries ends here
        skipped: set[str] = set()
        recovering: set[str] = set()  # models this turn put in a cooldown: a fresh round once it ends
        again: str | None = None  # the model to retry, if the last failure said so
        while True:
            now = self.clock.now()
            live = [m for m in order if self._window(m) > floor]
            for m in live:  # a model back from its cooldown gets a fresh round, while the turn may wait
                if m in recovering and now <= deadline and self.cooling(m, now) is None:
                    tries[m] = 0
                    recovering.discard(m)
            ready = [m for m in live if tries[m] < self._max_attempts(m) and self.cooling(m, now) is None]
            if again in ready:
                model = again
            elif ready:
                model = ready[0]
                for m in live[:live.index(model)]:
                    c = self.cooling(m, now)
                    if c is not None and m not in skipped and not tries[m]:  # cooling since before this turn
                        skipped.add(m)
                        self._skip(m, c, now, attempts, on_failure)
            else:
                model, delay = self._wait_for(live, now, deadline, attempts, on_failure)
                await self.clock.sleep(delay)
                again = model
                continue
            again = None
            tries[model] += 1
            started, t0 = time.time(), self.clock.now()
            try:
                async with await self.limits.acquire(model, tokens) as permit:
                    t0 = self.clock.now()
                    result = await attempt(model)
                    permit.settle(usage(result) if usage is not None else None)
            except ProviderError as err:
                attempts.append(p.Attempt(model=model, outcome="error", error=str(err),
                                          latency_ms=(self.clock.now() - t0) * 1000, started_at=started,
                                          status=err.status, kind=err.kind))
                floor, again, delay = self._after(model, err, tries[model], live, floor, attempts, on_failure)
                if self.cooling(model) is not None:
                    recovering.add(model)
                if again is None:  # falling over: say where to
                    live = [m for m in order if self._window(m) > floor]
                    action, delay = self._next(live, tries, deadline)
                    on_failure(model, err, action, delay)
                    delay = 0.0
                if delay:
                    await self.clock.sleep(delay)
                continue
            except asyncio.CancelledError:
                attempts.append(p.Attempt(model=model, outcome="cancelled", latency_ms=(self.clock.now() - t0) * 1000,
                                          started_at=started))
                raise
            attempts.append(p.Attempt(model=model, outcome="ok", latency_ms=(self.clock.now() - t0) * 1000,
                                      started_at=started))
            self._healthy(model)
            return model, result

    def _max_attempts(self, model: str) -> int:
        return max(1, self.settings(model).max_attempts or 1)

    def _after(self, model: str, err: ProviderError, tried: int, live: list[str], floor: int,
               attempts: list[p.Attempt], on_failure: OnFailure) -> tuple[int, str | None, float]:
        """Act on a failed try: (new window floor, the model to retry or None to fall over, delay)."""
        cfg = self.config
        if err.kind not in TRANSIENT | {"auth", "context_length"}:  # bad_request: the request is wrong
            on_failure(model, err, "give up", 0.0)
            raise RequestRejected(attempts, f"{model} refused the request: {err}")
        if err.kind == "context_length":
            floor = max(floor, self._window(model))
            if not any(self._window(m) > floor for m in live):
                on_failure(model, err, "give up", 0.0)
                raise AllModelsFailed(attempts, f"the conversation is too long for {model} and no candidate"
                                                f" has a larger context window ({err})")
            return floor, None, 0.0
        if err.kind == "auth":
            old = self._cool.get(model)  # kept after it expires, until a success: repeats double it
            strikes = old.strikes if old is not None and old.kind == "auth" else 0
            self.cool(model, min(cfg.auth_cooldown * 2 ** strikes, max(cfg.auth_cooldown, 3600.0)), "auth", str(err))
            return floor, None, 0.0
        ra = err.retry_after
        if ra is not None and ra > cfg.max_retry_after:
            self.cool(model, ra, err.kind, str(err))
            return floor, None, 0.0
        if tried < self._max_attempts(model):
            backoff = min(cfg.backoff_max, cfg.backoff_base * 2 ** (tried - 1))
            if ra:  # honour Retry-After, plus a little jitter so waiters do not return in a herd
                delay = ra + self._jitter.uniform(0, min(1.0, ra * 0.1))
            else:
                delay = backoff / 2 + self._jitter.uniform(0, backoff / 2)
            if err.kind in ("rate_limit", "overloaded"):
                self.limits.hold(model, self.clock.now() + delay)  # every turn on this model waits, not just this one
            on_failure(model, err, "retry", delay)
            return floor, model, delay
        pause = max(self.settings(model).failure_cooldown or 0.0, ra or 0.0)
        if pause > 0:
            self.cool(model, pause, err.kind, str(err))
        return floor, None, 0.0

    def _next(self, live: list[str], tries: dict[str, int], deadline: float) -> tuple[str, float]:
        """After falling over: ("fallback", 0) if a model is ready, ("retry", ETA) if the turn will wait
        for one to come back, else ("give up", 0)."""
        now = self.clock.now()
        if any(tries[m] < self._max_attempts(m) and self.cooling(m, now) is None for m in live):
            return "fallback", 0.0
        back = [c.until - now for m in live if (c := self.cooling(m, now)) is not None]
        if back and now + min(back) <= deadline:
            return "retry", min(back)
        return "give up", 0.0

    def _skip(self, model: str, c: _Cooldown, now: float, attempts: list[p.Attempt],
              on_failure: OnFailure) -> None:
        reason = f"cooling down for {c.until - now:.1f}s after {c.kind}: {c.reason}"
        attempts.append(p.Attempt(model=model, outcome="skipped", error=reason, started_at=time.time(), kind=c.kind))
        on_failure(model, ProviderError(c.kind, reason), "fallback", 0.0)  # type: ignore[arg-type]

    def _wait_for(self, live: list[str], now: float, deadline: float, attempts: list[p.Attempt],
                  on_failure: OnFailure) -> tuple[str, float]:
        """Every candidate is cooling down: the one back first and how long to wait for it (or give up)."""
        back = sorted((c.until, m) for m in live if (c := self.cooling(m, now)) is not None)
        if not back:
            raise AllModelsFailed(attempts)
        until, model = back[0]
        delay = until - now
        c = self._cool[model]
        if now + delay > deadline:
            raise AllModelsFailed(attempts, f"every model is cooling down; the first back is {model} in"
                                            f" {delay:.0f}s, longer than the turn may wait (last error: {c.reason})")
        reason = f"every model is cooling down; waiting {delay:.1f}s for {model} ({c.kind}: {c.reason})"
        on_failure(model, ProviderError(c.kind, reason), "retry", delay)  # type: ignore[arg-type]
        return model, delay


class StallGuard:
    """`async with StallGuard(seconds) as g:` around a stream, `g.tick()` per event: if no event comes
    for `seconds`, the stream is cancelled and a ProviderError("timeout") raised in its place. The user's
    own cancel still wins. One timer per stream, rearmed lazily (a tick is one clock read)."""

    __slots__ = ("seconds", "last", "_loop", "_task", "_handle", "_fired")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> "StallGuard":
        if self.seconds:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self.last = self._loop.time()
            self._handle = self._loop.call_at(self.last + self.seconds, self._check)
        return self

    def tick(self) -> None:
        if self._handle is not None:
            self.last = self._loop.time()

    def _check(self) -> None:
        due = self.last + self.seconds  # type: ignore[operator]
        if self._loop.time() >= due:
            self._fired = True
            self._handle = None
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._check)

    async def __aexit__(self, typ: Any, exc: Any, tb: Any) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fired and typ is asyncio.CancelledError and self._task.uncancel() == 0:
            raise ProviderError("timeout", f"the stream stalled: nothing for {self.seconds:g}s") from None
