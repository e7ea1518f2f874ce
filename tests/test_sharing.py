"""Two clients on one daemon see each other's turns live; sends to one conversation are serialised."""

from __future__ import annotations

import asyncio

from chatd import protocol as p
from chatd.providers.echo import NOTICE
from chatd_client import AsyncClient, RpcError


async def _events_until(client: AsyncClient, method: str, pred=lambda params: True) -> list[tuple[str, dict]]:
    """Collect notifications until one with `method` satisfying `pred` arrives (returns all of them)."""
    seen = []
    while True:
        m, params = await asyncio.wait_for(client.notifications.get(), 10)
        seen.append((m, params))
        if m == method and pred(params):
            return seen


def test_two_clients_share_a_conversation_live(daemon):
    async def main():
        a = await AsyncClient.connect(daemon.socket)
        b = await AsyncClient.connect(daemon.socket)
        await a.request("conversation/create", {"name": "demo", "system": "be brief"})
        sub = await b.request("conversation/subscribe", {"name": "demo"})
        assert sub["messages"] == [] and sub["conversation"]["system"] == "be brief"
        await a.request("conversation/subscribe", {"name": "demo"})

        result = await a.request("chat/send", {"conversation": "demo", "text": "hello from A"})
        b_events = await _events_until(b, "chat/turnEnded")
        deltas = "".join(prm["text"] for m, prm in b_events if m == "chat/delta")
        assert deltas == result["message"]["text"]
        assert result["message"]["text"].endswith("You said: hello from A")
        assert NOTICE in result["message"]["text"]
        changed = [prm for m, prm in b_events if m == "conversation/changed"]
        assert [x["kind"] for x in changed] == ["turn"]
        assert [(x["role"], x["seq"]) for x in changed[0]["messages"]] == [("user", 1), ("assistant", 2)]
        started = [prm for m, prm in b_events if m == "chat/turnStarted"][0]
        assert started["user"]["text"] == "hello from A" and started["turnId"] == result["turnId"]
        await _events_until(a, "chat/turnEnded")  # A, the sender and a subscriber, hears it once

        # B continues the conversation; A sees it.
        result_b = await b.request("chat/send", {"conversation": "demo", "text": "and B replies"})
        a_events = await _events_until(a, "conversation/changed")
        assert a_events[-1][1]["messages"][1]["text"] == result_b["message"]["text"]
        assert "".join(prm["text"] for m, prm in a_events if m == "chat/delta") == result_b["message"]["text"]
        assert a.notifications.empty() or (await a.notifications.get())[0] == "chat/turnEnded"

        got = await a.request("conversation/get", {"name": "demo"})
        assert [m["seq"] for m in got["messages"]] == [1, 2, 3, 4]
        assert [m["role"] for m in got["messages"]] == ["user", "assistant", "user", "assistant"]
        assert got["conversation"]["lastModel"] == "echo"
        tail = await a.request("conversation/get", {"name": "demo", "afterSeq": 2})
        assert [m["seq"] for m in tail["messages"]] == [3, 4]
        await a.close()
        await b.close()

    asyncio.run(main())


def test_concurrent_sends_are_serialised_in_arrival_order(daemon):
    async def main():
        a = await AsyncClient.connect(daemon.socket)
        b = await AsyncClient.connect(daemon.socket)
        await a.request("conversation/create", {"name": "race", "params": {"echoDelayMs": 2}})
        await b.request("conversation/subscribe", {"name": "race"})
        # A's request is on the wire before B's: A's turn is first, and the two never interleave.
        _, fa = a.start_request("chat/send", {"conversation": "race", "text": "first"})
        await a.request("daemon/status")  # A's send has been read by the daemon
        rb = await b.request("chat/send", {"conversation": "race", "text": "second"})
        ra = await fa
        assert "result" in ra
        events = await _events_until(b, "chat/turnEnded", lambda prm: prm["turnId"] == rb["turnId"])
        order = [prm["turnId"] for m, prm in events if m in ("chat/delta", "chat/turnStarted")]
        first_b = order.index(rb["turnId"])
        assert set(order[:first_b]) == {ra["result"]["turnId"]} and set(order[first_b:]) == {rb["turnId"]}
        got = await a.request("conversation/get", {"name": "race"})
        assert [m["text"] for m in got["messages"] if m["role"] == "user"] == ["first", "second"]
        await a.close()
        await b.close()

    asyncio.run(main())


def test_wildcard_subscription_sees_lifecycle(daemon):
    async def main():
        watcher = await AsyncClient.connect(daemon.socket)
        actor = await AsyncClient.connect(daemon.socket)
        listing = await watcher.request("conversation/subscribe", {"name": "*"})
        assert listing["conversations"] == []
        await actor.request("conversation/create", {"name": "one"})
        await actor.request("conversation/update", {"name": "one", "newName": "uno"})
        await actor.request("chat/send", {"conversation": "uno", "text": "hi"})
        await actor.request("conversation/fork", {"name": "uno", "newName": "dos"})
        await actor.request("conversation/clear", {"name": "uno"})
        await actor.request("conversation/delete", {"name": "dos"})
        kinds = []
        while len(kinds) < 6:
            m, prm = await asyncio.wait_for(watcher.notifications.get(), 10)
            assert m != "chat/delta"  # deltas are not broadcast to wildcard watchers
            if m == "conversation/changed":
                kinds.append((prm["kind"], prm["name"]))
        assert kinds == [("created", "one"), ("renamed", "uno"), ("turn", "uno"), ("created", "dos"),
                         ("cleared", "uno"), ("deleted", "dos")]
        await watcher.close()
        await actor.close()

    asyncio.run(main())


def test_conversation_crud_and_errors(daemon):
    async def main():
        c = await AsyncClient.connect(daemon.socket)
        created = await c.request("conversation/create", {"name": "crud", "system": "sys", "models": ["echo"]})
        assert created["conversation"]["models"] == ["echo"] and created["conversation"]["preferModel"] == "last"
        for params, code in [
            ({"name": "crud"}, p.CONVERSATION_EXISTS),
            ({"name": ""}, p.INVALID_PARAMS),
            ({"name": "*"}, p.INVALID_PARAMS),
            ({"name": "x", "models": ["no-such-model"]}, p.MODEL_NOT_FOUND),
            ({"name": "x", "models": ["echo"], "modelWeights": [1, 2]}, p.INVALID_PARAMS),
        ]:
            try:
                await c.request("conversation/create", params)
                raise AssertionError(f"{params} was accepted")
            except RpcError as err:
                assert err.code == code, (params, err)
        for method in ("conversation/get", "conversation/delete", "conversation/clear"):
            try:
                await c.request(method, {"name": "missing"})
                raise AssertionError("no error")
            except RpcError as err:
                assert err.code == p.CONVERSATION_NOT_FOUND and "missing" in err.message
        await c.request("chat/send", {"conversation": "crud", "text": "one"})
        await c.request("chat/send", {"conversation": "crud", "text": "two"})
        fork = await c.request("conversation/fork", {"name": "crud", "newName": "crud-fork", "atSeq": 2})
        assert fork["conversation"]["messageCount"] == 2 and fork["conversation"]["system"] == "sys"
        cleared = await c.request("conversation/clear", {"name": "crud"})
        assert cleared["conversation"]["messageCount"] == 0 and cleared["conversation"]["system"] == "sys"
        after = await c.request("chat/send", {"conversation": "crud", "text": "three"})
        assert after["message"]["seq"] == 6  # seqs are never reused
        listed = await c.request("conversation/list", {"query": "fork"})
        assert [x["name"] for x in listed["conversations"]] == ["crud-fork"]
        renamed = await c.request("conversation/update", {"name": "crud-fork", "newName": "kept"})
        assert renamed["conversation"]["name"] == "kept"
        assert len((await c.request("conversation/get", {"name": "kept"}))["messages"]) == 2
        await c.request("conversation/delete", {"name": "kept"})
        assert [x["name"] for x in (await c.request("conversation/list", {}))["conversations"]] == ["crud"]
        # chat/send creates a missing conversation
        await c.request("chat/send", {"conversation": "fresh", "text": "hi"})
        assert (await c.request("conversation/get", {"name": "fresh"}))["conversation"]["messageCount"] == 2
        await c.close()

    asyncio.run(main())


def test_a_late_subscriber_gets_the_turn_in_progress(daemon):
    async def main():
        a = await AsyncClient.connect(daemon.socket)
        late = await AsyncClient.connect(daemon.socket)
        await a.request("conversation/create", {"name": "live"})
        await a.request("conversation/subscribe", {"name": "live"})
        _, reply = a.start_request("chat/send", {"conversation": "live", "text": "one two three four",
                                                 "params": {"echoDelayMs": 10}})
        for _ in range(3):  # three words streamed before the late client arrives
            while (await a.notifications.get())[0] != "chat/delta":
                pass
        sub = await late.request("conversation/subscribe", {"name": "live"})
        active = sub["activeTurn"]
        assert active["user"]["text"] == "one two three four" and active["model"] == "echo"
        events = await _events_until(late, "chat/turnEnded")
        rest = "".join(prm["text"] for m, prm in events if m == "chat/delta")
        final = (await reply)["result"]["message"]["text"]
        assert active["text"] and active["text"] + rest == final  # nothing missed, nothing twice
        done = await late.request("conversation/get", {"name": "live"})
        assert done["activeTurn"] is None and len(done["messages"]) == 2
        await a.close()
        await late.close()

    asyncio.run(main())


def test_watchers_get_what_editors_need(daemon):
    """clientRef echoes to the sender's turnStarted; every watcher gets usage, cost and the settings;
    subscribe can create; an empty params array means no params (Lua encodes {} as [])."""

    async def main():
        a = await AsyncClient.connect(daemon.socket)
        w = await AsyncClient.connect(daemon.socket)
        sub = await w.request("conversation/subscribe", {"name": "ed", "create": True})
        assert sub["conversation"]["name"] == "ed" and sub["messages"] == []
        assert (await a.request("daemon/status", []))["pid"] == daemon.proc.pid
        r = await a.request("chat/send", {"conversation": "ed", "text": "hi", "clientRef": "nvim-1"})
        events = await _events_until(w, "chat/turnEnded")
        started = next(prm for m, prm in events if m == "chat/turnStarted")
        changed = next(prm for m, prm in events if m == "conversation/changed")
        assert started["clientRef"] == "nvim-1"
        assert changed["usage"] == r["usage"] and changed["cost"] == r["cost"]
        assert changed["conversation"]["lastSeq"] == 2 and changed["conversation"]["lastModel"] == "echo"
        await a.close()
        await w.close()

    asyncio.run(main())
