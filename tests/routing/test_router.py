"""Router.run with a scripted attempt callable, in virtual time: backoff, Retry-After, fallback,
cooldowns shared between turns, context-length fall-over, bad requests, waiting when every model is
down, and cancel while waiting."""

from __future__ import annotations

import asyncio

import pytest
from scripted import E401, E500, Script, Told, err, router
from vtime import run

from chatd.routing import LAST, AllModelsFailed, RequestRejected, StallGuard


def test_429_with_retry_after_retries_the_same_model_after_that_long():
    async def main():
        r = router()
        script, told, attempts = Script({"a": [err("rate_limit", 429, retry_after=2), "hello"]}), Told(), []
        model, result = await r.run(["a", "b"], script, told, attempts)
        assert (model, result) == ("a", "hello")
        assert script.models() == ["a", "a"]
        assert 2.0 <= script.gaps()[0] <= 2.2  # Retry-After honoured, a little jitter on top
        assert told.log[0][:3] == ("a", "rate_limit", "retry") and told.log[0][3] == pytest.approx(script.gaps()[0])
        assert [a.outcome for a in attempts] == ["error", "ok"]
        assert attempts[0].status == 429 and attempts[0].kind == "rate_limit"
        assert r.cooldown_until("a") is None

    run(main())


def test_three_500s_back_off_exponentially_then_fall_over_and_last_sticks_to_the_answerer():
    async def main():
        r = router(backoff_base=1.0)
        script, told, attempts = Script({"a": [E500()]}), Told(), []
        model, _ = await r.run(r.plan(["a", "b"], None, LAST, None), script, told, attempts)
        assert model == "b"
        assert script.models() == ["a", "a", "a", "b"]
        g1, g2, g3 = script.gaps()
        assert 0.5 <= g1 <= 1.0 and 1.0 <= g2 <= 2.0  # base·2^(n-1), jittered within its upper half
        assert g3 == 0  # falling over does not wait
        assert told.actions() == ["retry", "retry", "fallback"]
        assert r.cooldown_until("a") is not None  # used up its tries: a short cooldown
        # the next turn, preferModel "last", sticks to the model that answered
        assert r.plan(["a", "b"], None, LAST, model)[0] == "b"

    run(main())


def test_backoff_jitter_is_deterministic_under_a_seed():
    async def delays(seed):
        r = router(seed=seed)
        script = Script({"a": [E500(), E500(), "ok"]})
        await r.run(["a"], script, Told(), [])
        return script.gaps()

    assert run(delays(5)) == run(delays(5))
    assert run(delays(5)) != run(delays(6))


@pytest.mark.parametrize("kind", ["timeout", "connection", "stream", "overloaded", "server"])
def test_transient_failures_retry_then_fall_over(kind):
    async def main():
        r = router(max_attempts=2)
        script, told = Script({"a": [err(kind)]}), Told()
        model, _ = await r.run(["a", "b"], script, told, [])
        assert model == "b" and script.models() == ["a", "a", "b"]
        assert told.actions() == ["retry", "fallback"]

    run(main())


def test_a_401_cools_the_model_down_for_every_conversation_and_the_cooldown_expires():
    async def main():
        r = router(auth_cooldown=300)
        script, told, attempts = Script({"a": [E401(), "a is back"]}), Told(), []
        model, _ = await r.run(["a", "b"], script, told, attempts)
        assert model == "b" and script.models() == ["a", "b"] and told.actions() == ["fallback"]
        assert r.cooldown_until("a") is not None
        # another conversation, sticky on "a": plan puts it last, run skips it without calling it
        plan = r.plan(["a", "b"], None, LAST, "a")
        assert plan == ["b", "a"]
        other, told2, attempts2 = Script({}), Told(), []
        await r.run(["a", "b"], other, told2, attempts2)
        assert other.models() == ["b"]
        assert attempts2[0].outcome == "skipped" and "auth" in attempts2[0].error
        assert told2.log[0][0] == "a" and told2.log[0][2] == "fallback"
        # minutes, not for ever
        await asyncio.sleep(301)
        assert r.cooldown_until("a") is None
        assert (await r.run(["a", "b"], script, Told(), []))[0] == "a"

    run(main())


def test_a_repeated_401_doubles_the_cooldown():
    async def main():
        r = router(auth_cooldown=100)
        loop = asyncio.get_running_loop()
        script = Script({"a": [E401()]})
        await r.run(["a", "b"], script, Told(), [])
        first = r._cool["a"].until - loop.time()
        await asyncio.sleep(first + 1)
        await r.run(["a", "b"], script, Told(), [])
        second = r._cool["a"].until - loop.time()
        assert first == pytest.approx(100) and second == pytest.approx(200)

    run(main())


def test_context_length_falls_over_only_to_a_larger_window():
    async def main():
        r = router(windows={"mid": 128_000, "small": 64_000, "big": 1_000_000})
        script, told = Script({"mid": [err("context_length", 400)]}), Told()
        model, _ = await r.run(["mid", "small", "big"], script, told, [])
        assert model == "big" and script.models() == ["mid", "big"]
        assert told.actions() == ["fallback"]
        assert r.cooldown_until("mid") is None  # a long conversation says nothing about the model's health

    run(main())


def test_context_length_with_no_larger_window_is_the_turns_error():
    async def main():
        r = router(windows={"mid": 128_000, "small": 64_000})
        script, told = Script({"mid": [err("context_length", 400, msg="maximum context length exceeded")]}), Told()
        with pytest.raises(AllModelsFailed, match="too long for mid and no candidate has a larger"):
            await r.run(["mid", "small"], script, told, [])
        assert script.models() == ["mid"] and told.actions() == ["give up"]

    run(main())


def test_other_400s_are_returned_without_retry_or_fallback():
    async def main():
        r = router()
        script, told, attempts = Script({"a": [err("bad_request", 400, msg="temperature must be <= 2")]}), Told(), []
        with pytest.raises(RequestRejected, match="a refused the request: 400: temperature must be <= 2"):
            await r.run(["a", "b"], script, told, attempts)
        assert script.models() == ["a"] and told.actions() == ["give up"] and len(attempts) == 1

    run(main())


def test_a_long_retry_after_cools_the_model_and_falls_over_at_once():
    async def main():
        r = router(max_retry_after=30)
        script, told = Script({"a": [err("rate_limit", 429, retry_after=120)]}), Told()
        model, _ = await r.run(["a", "b"], script, told, [])
        assert model == "b" and script.gaps() == [0]
        assert told.actions() == ["fallback"]
        until = r._cool["a"].until - asyncio.get_running_loop().time()
        assert until == pytest.approx(120)

    run(main())


def test_all_models_down_the_turn_waits_for_the_first_back_then_completes():
    async def main():
        r = router(auth_cooldown=40, max_wait=60)
        await r.run(["a", "c"], Script({"a": [E401()]}), Told(), [])  # a cools for 40 s
        await asyncio.sleep(10)
        await r.run(["b", "c"], Script({"b": [E401()]}), Told(), [])  # b cools for 40 s, until 10 s after a
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        script, told = Script({"a": ["a is back"]}), Told()
        model, result = await r.run(["a", "b"], script, told, [])
        assert (model, result) == ("a", "a is back")
        assert loop.time() - t0 == pytest.approx(30, abs=0.01)  # a is back 30 s later
        model_told, kind, action, delay = told.log[-1]
        assert (model_told, kind, action) == ("a", "auth", "retry") and delay == pytest.approx(30, abs=0.01)

    run(main())


def test_all_models_failing_transiently_wait_for_a_recovery():
    async def main():
        r = router(max_attempts=2, failure_cooldown=20, max_wait=120)
        script, told = Script({"a": [E500(), E500(), "a recovered"], "b": [E500()]}), Told()
        model, result = await r.run(["a", "b"], script, told, [])
        assert (model, result) == ("a", "a recovered")
        assert script.models() == ["a", "a", "b", "b", "a"]
        assert told.actions() == ["retry", "fallback", "retry", "retry", "retry"]
        assert told.log[3][3] > 0  # b's last failure says how long until a is back

    run(main())


def test_when_the_wait_would_exceed_max_wait_the_turn_fails_at_once():
    async def main():
        r = router(auth_cooldown=300, max_wait=60)
        script = Script({"a": [E401()], "b": [E401()]})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(AllModelsFailed, match="every model is cooling down; the first back is a in 300s"):
            await r.run(["a", "b"], script, Told(), [])
        assert loop.time() == t0

    run(main())


def test_cancel_while_waiting_for_a_model_to_come_back():
    async def main():
        r = router(auth_cooldown=100, max_wait=200)
        await r.run(["a", "b", "c"], Script({"a": [E401()], "b": [E401()], "c": ["ok"]}), Told(), [])
        loop = asyncio.get_running_loop()
        told = Told(waiting=asyncio.Event())
        attempts: list = []
        task = asyncio.ensure_future(r.run(["a", "b"], Script({}), told, attempts))
        await told.waiting.wait()
        t0 = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() == t0  # it did not sit out the cooldown
        assert [a.outcome for a in attempts] == []  # nothing was tried

    run(main())


def test_cancel_during_an_attempt_is_recorded():
    async def main():
        r = router()
        script = Script({"a": ["slow"]}, duration=50)
        attempts: list = []
        task = asyncio.ensure_future(r.run(["a"], script, Told(), attempts))
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [a.outcome for a in attempts] == ["cancelled"]
        assert r.limits.slots._value == r.limits.max_concurrent  # the slot came back

    run(main())


def test_a_retry_after_holds_every_request_to_that_model():
    """Two turns on one model: the 429 one turn sees makes the other wait too (one quota per key)."""

    async def main():
        r = router()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first, second = Script({"a": [err("rate_limit", 429, retry_after=5), "ok"]}), Script({"a": ["ok"]})
        await asyncio.gather(r.run(["a"], first, Told(), []), _later(0.1, r.run(["a"], second, Told(), [])))
        assert first.calls[0][1] == t0
        assert second.calls[0][1] >= t0 + 5  # it arrived 0.1 s after the 429 and waited out the Retry-After

    async def _later(delay, coro):
        await asyncio.sleep(delay)
        return await coro

    run(main())


def test_stall_guard_turns_silence_into_a_timeout_and_leaves_a_real_cancel_alone():
    async def stream(gaps):
        for g in gaps:
            await asyncio.sleep(g)
            yield g

    async def consume(gaps, limit):
        got = []
        async with StallGuard(limit) as guard:
            async for ev in stream(gaps):
                guard.tick()
                got.append(ev)
        return got

    async def main():
        assert await consume([1, 1, 1, 1], 1.5) == [1, 1, 1, 1]  # steady events never trip it
        with pytest.raises(Exception) as info:
            await consume([1, 1, 5], 1.5)
        assert getattr(info.value, "kind", None) == "timeout"
        task = asyncio.ensure_future(consume([1, 10], 100))
        await asyncio.sleep(2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
