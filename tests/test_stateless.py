"""Stateless `chat/send`: a client that keeps its own transcript sends it with the turn; nothing is stored."""

from __future__ import annotations

import asyncio

import pytest

from chatd import protocol as p
from chatd_client import AsyncClient, RpcError


def test_stateless_turn_streams_to_the_sender_and_stores_nothing(daemon):
    async def main():
        c = await AsyncClient.connect(daemon.socket)
        watcher = await AsyncClient.connect(daemon.socket)
        await watcher.request("conversation/subscribe", {"name": "*"})
        history = [{"role": "user", "parts": [{"type": "text", "text": "earlier question"}]},
                   {"role": "assistant", "parts": [{"type": "text", "text": "earlier answer"}], "model": "echo"}]
        r = await c.request("chat/send", {"text": "and now?", "history": history, "system": "be brief"})
        assert r["conversation"] is None and r["message"]["text"].endswith("You said: and now?")
        assert [m["role"] for m in r["messages"]] == ["assistant"] and r["usage"]["inputTokens"] == 2
        deltas = []
        while not c.notifications.empty():
            m, prm = c.notifications.get_nowait()
            if m == "chat/delta":
                deltas.append(prm["text"])
        assert "".join(deltas) == r["message"]["text"]
        assert (await c.request("conversation/list"))["conversations"] == []
        assert (await c.request("daemon/status"))["activeTurns"] == 0
        await watcher.request("daemon/status")
        assert watcher.notifications.empty()  # nobody else hears a stateless turn
        with pytest.raises(RpcError) as err:
            await c.request("chat/send", {"conversation": "named", "text": "x", "history": history})
        assert err.value.code == p.INVALID_PARAMS
        await c.close()
        await watcher.close()

    asyncio.run(main())


def test_stateless_turn_can_be_cancelled(daemon):
    async def main():
        c = await AsyncClient.connect(daemon.socket)
        msg_id, reply = c.start_request("chat/send", {"text": "slow one", "params": {"echoDelayMs": 50}})
        while (await c.notifications.get())[0] != "chat/delta":
            pass
        c.notify("$/cancelRequest", {"id": msg_id})
        assert (await reply)["error"]["code"] == p.REQUEST_CANCELLED
        assert (await c.request("daemon/status"))["activeTurns"] == 0
        await c.close()

    asyncio.run(main())
