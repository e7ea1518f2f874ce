"""Routing through a real `chatd serve` subprocess and a fake OpenAI-compatible server injecting faults:
Retry-After, 500s then fallback and stickiness, a 401 cooling a model for everyone, a stall that times
out, a mid-stream break restarting on the fallback (seen by every client), all models down then one
recovering, cancel while waiting, and chat/batch (order, progress, mixed prompts, a scaled rate limit)."""

from __future__ import annotations

import asyncio
import gc
import os
import time

import pytest
from fake_llm import FakeLLM, config_toml, dropped, error, rate_limited, stalled, unauthorized
from helpers import new_daemon
from test_ratelimit import max_in_window

from chatd import protocol as p
from chatd_client import AsyncClient

# Per-model routing settings; the [routing] table scales time down: backoff in tens of ms, and a one-second
# "minute" for the rate-limit scenario (only the model `rl` has a limit).
MODELS = {
    "r429": {}, "spare": {},
    "s500a": {}, "s500b": {},
    "auth-a": {}, "auth-b": {},
    "stall-a": {"stall-timeout": 0.3, "max-attempts": 1}, "stall-b": {},
    "drop-a": {"max-attempts": 1}, "drop-b": {},
    "bstall-a": {"stall-timeout": 0.3, "max-attempts": 1}, "bstall-b": {}, "bdrop-a": {"max-attempts": 1}, "bdrop-b": {},
    "down-a": {"max-attempts": 1, "failure-cooldown": 0.2}, "down-b": {"max-attempts": 1, "failure-cooldown": 0.2},
    "gone": {"max-attempts": 1, "failure-cooldown": 30},
    "rl": {"requests-per-minute": 100},
    "fast": {},
}
ROUTING = {"backoff-base": 0.05, "backoff-max": 0.2, "max-wait": 60, "window": 1.0, "headroom": 0.05}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with FakeLLM() as fake:
        d = new_daemon(tmp_path_factory.mktemp("routing"))
        os.makedirs(os.path.dirname(d.paths.config_file), exist_ok=True)
        with open(d.paths.config_file, "w") as f:
            f.write(config_toml(fake.url, MODELS, ROUTING))
        d.extra_args = ["--seed", "1"]
        d.start()
        yield d, fake
        d.stop()


async def _until_end(c: AsyncClient) -> list[tuple[str, dict]]:
    seen = []
    while True:
        method, params = await asyncio.wait_for(c.notifications.get(), 20)
        seen.append((method, params))
        if method == "chat/turnEnded":
            return seen


def _attempt_notes(seen):
    return [prm for m, prm in seen if m == "chat/attempt"]


def test_429_with_retry_after_2_then_success_on_the_same_model(env):
    d, fake = env
    fake.script("r429", rate_limited("2"))

    async def main():
        c = await AsyncClient.connect(d.socket)
        await c.request("conversation/create", {"name": "t429", "models": ["r429", "spare"]})
        res = await c.request("chat/send", {"conversation": "t429", "text": "hi"})
        seen = await _until_end(c)
        await c.close()
        return res, seen

    res, seen = asyncio.run(main())
    assert res["modelUsed"] == "r429"
    assert [(a["outcome"], a["status"]) for a in res["attempts"]] == [("error", 429), ("ok", None)]
    (note,) = _attempt_notes(seen)
    assert note["next"] == "retry" and note["kind"] == "rate_limit" and 2.0 <= note["delayS"] <= 2.2
    calls = fake.calls_to("r429")
    assert len(calls) == 2 and calls[1][1] - calls[0][1] >= 2.0
    assert not fake.calls_to("spare")


def test_three_500s_fall_over_to_the_second_model_and_the_next_turn_sticks_to_it(env):
    d, fake = env
    fake.script("s500a", *(error(500, "The server had an error") for _ in range(3)))

    async def main():
        c = await AsyncClient.connect(d.socket)
        await c.request("conversation/create", {"name": "t500", "models": ["s500a", "s500b"]})
        first = await c.request("chat/send", {"conversation": "t500", "text": "one"})
        seen = await _until_end(c)
        second = await c.request("chat/send", {"conversation": "t500", "text": "two"})
        stored = await c.request("conversation/get", {"name": "t500"})
        await c.close()
        return first, seen, second, stored

    first, seen, second, stored = asyncio.run(main())
    assert first["modelUsed"] == "s500b"
    assert [(a["model"], a["outcome"]) for a in first["attempts"]] == [
        ("s500a", "error"), ("s500a", "error"), ("s500a", "error"), ("s500b", "ok")]
    assert [n["next"] for n in _attempt_notes(seen)] == ["retry", "retry", "fallback"]
    assert second["modelUsed"] == "s500b" and [a["model"] for a in second["attempts"]] == ["s500b"]
    assert len(fake.calls_to("s500a")) == 3
    assert stored["conversation"]["lastModel"] == "s500b"
    assert [m["model"] for m in stored["messages"] if m["role"] == "assistant"] == ["s500b", "s500b"]


def test_a_401_cools_the_model_down_for_every_conversation(env):
    d, fake = env
    fake.script("auth-a", unauthorized())

    async def main():
        a = await AsyncClient.connect(d.socket)
        b = await AsyncClient.connect(d.socket)
        await a.request("conversation/create", {"name": "auth1", "models": ["auth-a", "auth-b"]})
        first = await a.request("chat/send", {"conversation": "auth1", "text": "hi"})
        models = {m["name"]: m for m in (await b.request("models/list"))["models"]}
        other = await b.request("chat/send", {"conversation": "auth2", "text": "hi", "models": ["auth-a", "auth-b"],
                                              "preferModel": "auth-a"})
        await a.close()
        await b.close()
        return first, models, other

    first, models, other = asyncio.run(main())
    assert first["modelUsed"] == "auth-b" and first["attempts"][0]["status"] == 401
    assert models["auth-a"]["cooldownUntil"] > time.time() + 200  # minutes
    assert models["auth-b"]["cooldownUntil"] is None
    assert other["modelUsed"] == "auth-b"
    assert other["attempts"][0]["outcome"] == "skipped" and other["attempts"][0]["kind"] == "auth"
    assert len(fake.calls_to("auth-a")) == 1  # the other conversation did not even try it


def test_a_stalled_stream_times_out_and_falls_over(env):
    d, fake = env
    fake.script("stall-a", stalled())

    async def main():
        c = await AsyncClient.connect(d.socket)
        res = await c.request("chat/send", {"conversation": "tstall", "text": "x", "models": ["stall-a", "stall-b"]})
        seen = await _until_end(c)
        await c.close()
        return res, seen

    res, seen = asyncio.run(main())
    assert res["modelUsed"] == "stall-b"
    assert res["attempts"][0]["kind"] == "timeout" and "stalled" in res["attempts"][0]["error"]
    (note,) = _attempt_notes(seen)
    assert note["model"] == "stall-a" and note["next"] == "fallback"
    assert res["message"]["text"] == "stall-b answers: x"


def test_a_mid_stream_break_restarts_on_the_fallback_and_every_client_sees_the_restart(env):
    d, fake = env
    fake.script("drop-a", dropped())

    async def main():
        c = await AsyncClient.connect(d.socket)
        watcher = await AsyncClient.connect(d.socket)
        await c.request("conversation/create", {"name": "tdrop", "models": ["drop-a", "drop-b"]})
        await watcher.request("conversation/subscribe", {"name": "tdrop"})
        res = await c.request("chat/send", {"conversation": "tdrop", "text": "go"})
        seen, watched = await _until_end(c), await _until_end(watcher)
        await c.close()
        await watcher.close()
        return res, seen, watched

    res, seen, watched = asyncio.run(main())
    assert res["modelUsed"] == "drop-b" and res["message"]["text"] == "drop-b answers: go"
    for events in (seen, watched):
        methods = [m for m, _ in events]
        cut = methods.index("chat/attempt")
        before = "".join(prm["text"] for m, prm in events[:cut] if m == "chat/delta")
        after = "".join(prm["text"] for m, prm in events[cut:] if m == "chat/delta")
        assert before and "this reply will break off mid way".startswith(before)  # partial text, then void
        assert after == "drop-b answers: go"
        assert events[cut][1]["model"] == "drop-a" and events[cut][1]["next"] == "fallback"
        assert events[cut][1]["kind"] in ("stream", "connection")
        assert methods[-1] == "chat/turnEnded" and events[-1][1]["outcome"] == "committed"


def test_all_models_down_the_turn_waits_then_completes_when_one_recovers(env):
    d, fake = env
    fake.down |= {"down-a", "down-b"}

    async def main():
        c = await AsyncClient.connect(d.socket)
        _, reply = c.start_request("chat/send", {"conversation": "tdown", "text": "anyone?",
                                                 "models": ["down-a", "down-b"]})
        while True:
            method, prm = await asyncio.wait_for(c.notifications.get(), 20)
            if method == "chat/attempt" and "every model is cooling down" in prm["reason"]:
                break
        fake.down.discard("down-a")  # the first model recovers while the turn waits
        res = (await asyncio.wait_for(reply, 20))["result"]
        await c.close()
        return prm, res

    wait_note, res = asyncio.run(main())
    assert wait_note["next"] == "retry" and 0 < wait_note["delayS"] <= 0.2
    assert res["modelUsed"] == "down-a" and res["message"]["text"] == "down-a answers: anyone?"
    assert {a["model"] for a in res["attempts"] if a["outcome"] == "error"} == {"down-a", "down-b"}


def test_cancel_while_waiting_for_a_model_to_come_back(env):
    d, fake = env
    fake.down.add("gone")

    async def main():
        c = await AsyncClient.connect(d.socket)
        _, reply = c.start_request("chat/send", {"conversation": "tgone", "text": "hello?", "models": ["gone"]})
        while True:
            method, prm = await asyncio.wait_for(c.notifications.get(), 20)
            if method == "chat/attempt" and "every model is cooling down" in prm["reason"]:
                break
        t0 = time.monotonic()
        assert (await c.request("chat/cancel", {"conversation": "tgone"})) == {"cancelled": True}
        answer = await asyncio.wait_for(reply, 10)
        elapsed = time.monotonic() - t0
        ended = await _until_end(c)
        got = await c.request("conversation/get", {"name": "tgone"})
        await c.close()
        return prm, answer, elapsed, ended, got

    note, answer, elapsed, ended, got = asyncio.run(main())
    assert note["delayS"] > 20  # it would have waited out a 30 s cooldown
    assert answer["error"]["code"] == p.REQUEST_CANCELLED and elapsed < 5
    assert ended[-1][1]["outcome"] == "cancelled"
    assert got["messages"] == []


def test_batch_answers_in_order_with_progress_and_mixed_prompts(env):
    d, fake = env

    async def main():
        c = await AsyncClient.connect(d.socket)
        before = len((await c.request("conversation/list", {"limit": 1000}))["conversations"])
        prompts = [f"p{i}" for i in range(300)] + [
            {"messages": [{"role": "user", "text": "a"}, {"role": "assistant", "text": "b"},
                          {"role": "user", "text": "c"}], "system": "be brief"},
            {"conversation": "bconv", "text": "a stored turn"},
            "BAD prompt",
        ]
        res = await c.request("chat/batch", {"prompts": prompts, "models": ["fast"], "batchId": "b1"})
        progress = []
        while not c.notifications.empty():
            method, prm = c.notifications.get_nowait()
            if method == "chat/batchProgress":
                progress.append(prm)
        after = (await c.request("conversation/list", {"limit": 1000}))["conversations"]
        stored = await c.request("conversation/get", {"name": "bconv"})
        await c.close()
        return res, progress, before, after, stored

    res, progress, before, after, stored = asyncio.run(main())
    results = res["results"]
    assert [r["index"] for r in results] == list(range(303))
    assert all(results[i]["text"] == f"fast answers: p{i}" for i in range(300))
    assert results[300]["text"] == "fast answers: c"
    assert results[301]["ok"] and results[301]["conversation"] == "bconv"
    assert not results[302]["ok"] and results[302]["error"]["code"] == p.TURN_FAILED
    assert "refused the request" in results[302]["error"]["message"]
    assert (res["done"], res["failed"]) == (303, 1)
    assert progress[-1] == {"batchId": "b1", "done": 303, "failed": 1, "total": 303}
    assert [x["done"] for x in progress] == sorted(x["done"] for x in progress)
    # stateless prompts are not stored: the only new conversation is the one named
    assert len(after) == before + 1 and [m["role"] for m in stored["messages"]] == ["user", "assistant"]


def test_batch_under_a_rate_limit_never_exceeds_it_in_any_window_scaled(env):
    """The issue's 10,000 prompts at 600 RPM take 17 minutes; this is the same shape scaled in time and
    count: 600 prompts at 100 per one-second window (the fake counts arrivals). The full-scale run is
    tests/routing/test_ratelimit.py in virtual time.

    The fake stands in for a remote server but runs in this process, so a pause of this process's
    garbage collector (a full collection here takes ~110-150 ms late in a session) would hold back the
    requests that arrive meanwhile and stamp them all at once, crowding a window the daemon never crowded.
    The collector is therefore off while the batch runs."""
    d, fake = env
    n, per_window = 600, 100

    async def main():
        c = await AsyncClient.connect(d.socket)
        t0 = time.monotonic()
        res = await c.request("chat/batch", {"prompts": [f"q{i}" for i in range(n)], "models": ["rl"]})
        elapsed = time.monotonic() - t0
        await c.close()
        return res, elapsed

    gc.disable()
    try:
        res, elapsed = asyncio.run(main())
    finally:
        gc.enable()
    assert res["done"] == n and res["failed"] == 0
    assert all(r["text"] == f"rl answers: q{i}" for i, r in enumerate(res["results"]))
    arrivals = [t for _, t, _ in fake.calls_to("rl")]
    assert len(arrivals) == n
    assert max_in_window(arrivals, 1.0) <= per_window
    ideal = n / per_window  # 6 s at the limit's steady rate
    assert ideal * 0.95 <= arrivals[-1] - arrivals[0] <= ideal * 1.2, arrivals[-1] - arrivals[0]
    print(f"scaled batch: {n} prompts in {elapsed:.2f}s (ideal {ideal:.1f}s), "
          f"max {max_in_window(arrivals, 1.0):.0f} per window of 1 s (limit {per_window})")


def test_a_10000_prompt_batch_is_routine(env):
    """No limits: 10,000 stateless prompts answered in order, nothing stored (measured here: ~1,100-1,600
    prompts/s, about 1.3x the time of a bare loop over the daemon's own HTTP client at the same concurrency)."""
    d, fake = env
    n = 10_000

    async def main():
        c = await AsyncClient.connect(d.socket)
        before = len((await c.request("conversation/list", {"limit": 1000}))["conversations"])
        t0 = time.monotonic()
        res = await c.request("chat/batch", {"prompts": [f"n{i}" for i in range(n)], "models": ["fast"]})
        elapsed = time.monotonic() - t0
        after = len((await c.request("conversation/list", {"limit": 1000}))["conversations"])
        await c.close()
        return res, elapsed, before, after

    res, elapsed, before, after = asyncio.run(main())
    assert (res["done"], res["failed"]) == (n, 0)
    assert all(r["index"] == i and r["text"] == f"fast answers: n{i}" for i, r in enumerate(res["results"]))
    assert after == before
    print(f"10,000-prompt batch: {elapsed:.2f}s ({n / elapsed:.0f} prompts/s)")


def test_cancelling_a_rate_limited_batch_stops_it_and_frees_the_queue(env):
    d, fake = env

    async def main():
        c = await AsyncClient.connect(d.socket)
        msg_id, reply = c.start_request("chat/batch", {"prompts": [f"c{i}" for i in range(5000)], "models": ["rl"]})
        while True:
            method, prm = await asyncio.wait_for(c.notifications.get(), 20)
            if method == "chat/batchProgress" and prm["done"] > 0:
                break
        c.notify("$/cancelRequest", {"id": msg_id})
        answer = await asyncio.wait_for(reply, 10)
        sent = len(fake.calls_to("rl"))
        t0 = time.monotonic()
        after = await c.request("chat/send", {"conversation": "after-cancel", "text": "still there?", "models": ["rl"]})
        waited = time.monotonic() - t0
        await c.close()
        return answer, sent, after, waited

    answer, sent, after, waited = asyncio.run(main())
    assert answer["error"]["code"] == p.REQUEST_CANCELLED
    assert sent < 5000
    assert after["modelUsed"] == "rl" and waited < 1.0  # the queue was emptied, not left to drain


def test_batch_calls_are_not_streamed_and_a_stall_or_a_drop_still_falls_over(env):
    """chat/batch asks for whole replies (nothing watches the deltas): the stall timeout then bounds the
    whole call, and a body cut mid-way is a broken reply; both fall over as a stream would."""
    d, fake = env
    fake.script("bstall-a", stalled())
    fake.script("bdrop-a", dropped())

    async def main():
        c = await AsyncClient.connect(d.socket)
        t0 = time.monotonic()
        stall = await c.request("chat/batch", {"prompts": ["s1"], "models": ["bstall-a", "bstall-b"]})
        waited = time.monotonic() - t0
        drop = await c.request("chat/batch", {"prompts": ["d1"], "models": ["bdrop-a", "bdrop-b"]})
        await c.request("chat/send", {"conversation": "bstream", "text": "streamed", "models": ["bdrop-b"]})
        await c.close()
        return stall["results"][0], drop["results"][0], waited

    stall, drop, waited = asyncio.run(main())
    assert stall["ok"] and stall["modelUsed"] == "bstall-b" and stall["text"] == "bstall-b answers: s1"
    first = stall["attempts"][0]
    assert (first["model"], first["kind"]) == ("bstall-a", "timeout") and "stalled" in first["error"]
    assert stall["attempts"][-1]["model"] == "bstall-b" and 0.3 <= waited < 5
    assert drop["ok"] and drop["modelUsed"] == "bdrop-b" and drop["text"] == "bdrop-b answers: d1"
    assert drop["attempts"][0]["model"] == "bdrop-a" and drop["attempts"][0]["kind"] == "stream"
    assert fake.streamed["bstall-a"][-1] is False and fake.streamed["bdrop-a"][-1] is False
    assert fake.streamed["bdrop-b"][-2:] == [False, True]  # the batch's call, then chat/send's
