"""Cancelling a turn mid-stream: the request gets -32800, watchers hear `chat/turnEnded`, history keeps nothing."""

from __future__ import annotations

import asyncio

import pytest

from chatd import protocol as p
from chatd_client import AsyncClient


async def _first_delta(client: AsyncClient) -> None:
    while True:
        method, _ = await asyncio.wait_for(client.notifications.get(), 10)
        if method == "chat/delta":
            return


@pytest.mark.parametrize("how", ["chat/cancel", "$/cancelRequest", "client task cancelled"])
def test_cancel_mid_stream_commits_nothing(daemon, how):
    async def main():
        c = await AsyncClient.connect(daemon.socket)
        watcher = await AsyncClient.connect(daemon.socket)
        await c.request("chat/send", {"conversation": "cx", "text": "kept turn"})
        await watcher.request("conversation/subscribe", {"name": "cx"})
        params = {"conversation": "cx", "text": "doomed", "params": {"echoDelayMs": 20}}
        if how == "client task cancelled":
            task = asyncio.ensure_future(c.request("chat/send", params))
            await _first_delta(watcher)
            task.cancel()  # AsyncClient sends $/cancelRequest for it
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            msg_id, reply = c.start_request("chat/send", params)
            await _first_delta(watcher)
            if how == "chat/cancel":
                assert (await c.request("chat/cancel", {"conversation": "cx"})) == {"cancelled": True}
            else:
                c.notify("$/cancelRequest", {"id": msg_id})
            reply = await asyncio.wait_for(reply, 10)
            assert reply["id"] == msg_id and reply["error"]["code"] == p.REQUEST_CANCELLED
        while True:
            method, prm = await asyncio.wait_for(watcher.notifications.get(), 10)
            if method == "chat/turnEnded":
                assert prm["outcome"] == "cancelled"
                break
            assert method in ("chat/delta",)
        got = await c.request("conversation/get", {"name": "cx"})
        assert [m["text"] for m in got["messages"] if m["role"] == "user"] == ["kept turn"]
        assert got["conversation"]["messageCount"] == 2
        # the conversation is usable straight away
        after = await c.request("chat/send", {"conversation": "cx", "text": "next"})
        assert after["message"]["seq"] == 4
        assert (await c.request("chat/cancel", {"conversation": "cx"})) == {"cancelled": False}
        await c.close()
        await watcher.close()

    asyncio.run(main())


def test_failed_turn_leaves_history_clean(daemon):
    async def main():
        c = await AsyncClient.connect(daemon.socket)
        await c.request("conversation/subscribe", {"name": "*"})
        await c.request("chat/send", {"conversation": "f", "text": "fine"})
        msg_id, reply = c.start_request("chat/send", {"conversation": "f", "text": "breaks",
                                                      "params": {"echoFailAfter": 3}})
        reply = await asyncio.wait_for(reply, 10)
        assert reply["error"]["code"] == p.TURN_FAILED
        assert "echo: injected failure mid-stream" in reply["error"]["message"]
        assert reply["error"]["data"]["attempts"][0]["outcome"] == "error"
        got = await c.request("conversation/get", {"name": "f"})
        assert [m["text"] for m in got["messages"] if m["role"] == "user"] == ["fine"]
        await c.close()

    asyncio.run(main())


def test_client_disconnect_mid_turn_still_commits(daemon):
    """A client that goes away mid-turn loses nothing: the turn finishes and is committed for everyone."""

    async def main():
        watcher = await AsyncClient.connect(daemon.socket)
        await watcher.request("conversation/create", {"name": "dc"})
        await watcher.request("conversation/subscribe", {"name": "dc"})
        leaver = await AsyncClient.connect(daemon.socket)
        leaver.start_request("chat/send", {"conversation": "dc", "text": "bye", "params": {"echoDelayMs": 5}})
        await _first_delta(watcher)
        await leaver.close()
        while True:
            method, prm = await asyncio.wait_for(watcher.notifications.get(), 10)
            if method == "chat/turnEnded":
                assert prm["outcome"] == "committed"
                break
        got = await watcher.request("conversation/get", {"name": "dc"})
        assert [m["role"] for m in got["messages"]] == ["user", "assistant"]
        status = await watcher.request("daemon/status")
        assert status["connections"] == 1
        await watcher.close()

    asyncio.run(main())


def test_a_failing_attempt_is_reported_live_and_the_turn_fails_cleanly(daemon):
    """A mid-stream failure is announced as `chat/attempt` (its text void), then the turn fails whole."""

    async def main():
        c = await AsyncClient.connect(daemon.socket)
        await c.request("conversation/create", {"name": "fo", "models": ["echo"]})
        await c.request("conversation/subscribe", {"name": "fo"})
        msg_id, reply = c.start_request("chat/send", {"conversation": "fo", "text": "x",
                                                      "params": {"echoFailAfter": 2}})
        reply = await asyncio.wait_for(reply, 10)
        assert reply["error"]["code"] == p.TURN_FAILED
        seen, streamed = [], []
        while True:
            m, prm = await asyncio.wait_for(c.notifications.get(), 10)
            seen.append(m)
            if m == "chat/delta":
                streamed.append(prm["text"])
            if m == "chat/attempt":
                assert prm["model"] == "echo" and prm["next"] == "give up" and "injected" in prm["reason"]
            if m == "chat/turnEnded":
                assert prm["outcome"] == "failed" and "every model failed" in prm["error"]
                break
        assert "".join(streamed) == "[echo: the " and "chat/attempt" in seen  # two words, then the break
        await c.close()

    asyncio.run(main())
