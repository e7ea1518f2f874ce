"""Virtual time for asyncio tests: an event loop whose clock jumps to the next timer whenever every task
is waiting, so a router that backs off for minutes runs in microseconds, deterministically.

Everything else is real asyncio (tasks, locks, semaphores, cancellation, call_at); only the selector's
wait is replaced: instead of blocking for `timeout` it advances the clock by `timeout`. With no timer
pending and nothing ready, the loop would sleep for ever: that is a deadlock, and it raises.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


class _Selector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None):  # type: ignore[override]
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("virtual time: every task is waiting and no timer is set (deadlock)")
        assert self.loop is not None
        self.loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 1000.0) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = start

    def time(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
