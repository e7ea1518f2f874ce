"""kill -9 at random moments while 10 conversations run turns with tools and fallbacks, 20 times over:
every acknowledged turn is there, no turn is there in part, the database is sound, and the daemon
restarts cleanly each time (stale socket and lock)."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3

from chatd_client import AsyncClient
from helpers import new_daemon
from scripted_openai import FakeServer, openai_env, text_stream, tool_call_stream

ROUNDS = 20
CONVERSATIONS = 10


def _fake(req):
    """Alternately a tool call and the answer; every 7th request fails, so turns fall over to echo."""
    messages = req.json["messages"]
    if len(messages) % 7 == 0:
        from scripted_openai import Reply

        return Reply.json(500, {"error": {"message": "injected", "type": "server_error"}})
    if messages[-1]["role"] == "tool":
        return text_stream("the answer is in")
    return tool_call_stream([(f"call_{len(messages)}", "calculate", {"expression": "6*7"})])


def _check_history(db: sqlite3.Connection, acknowledged: dict[str, set[str]]) -> int:
    found = 0
    for name, turns in acknowledged.items():
        rows = db.execute(
            "SELECT m.seq, m.role, m.turn_id, coalesce(m.parts, json_array(json_object('type', 'text', 'text', m.text)))"
            " FROM messages m JOIN conversations c"
            " ON c.id = m.conversation_id WHERE c.name = ? ORDER BY m.seq", (name,)).fetchall()
        stored_turns = {r[2] for r in rows}
        assert turns <= stored_turns, f"{name}: acknowledged turns missing"
        # no partial turn: each starts with the user's message, ends with an answer or with results,
        # and every tool call in it has its result
        by_turn: dict[str, list] = {}
        for seq, role, turn_id, parts in rows:
            by_turn.setdefault(turn_id, []).append((role, json.loads(parts)))
        for turn_id, msgs in by_turn.items():
            assert msgs[0][0] == "user" and msgs[-1][0] in ("assistant", "tool"), (name, turn_id, msgs)
            calls = {x["id"] for _, parts in msgs for x in parts if x["type"] == "toolCall"}
            results = {x["callId"] for _, parts in msgs for x in parts if x["type"] == "toolResult"}
            assert calls == results, (name, turn_id)
        seqs = [r[0] for r in rows]
        assert seqs == sorted(set(seqs))
        found += len(stored_turns)
    return found


def test_kill_9_under_load_loses_no_acknowledged_turn(tmp_path):
    rng = random.Random(1234)
    acknowledged: dict[str, set[str]] = {f"load{i}": set() for i in range(CONVERSATIONS)}
    totals = {"acknowledged": 0, "found": 0, "kills": 0}

    async def main():
        async with FakeServer(_fake) as server:
            d = new_daemon(tmp_path, **openai_env(server))
            for round_no in range(ROUNDS):
                d.start()
                c = await AsyncClient.connect(d.socket)
                target = rng.randint(3, 25)  # acknowledged turns before the kill, this round
                done = asyncio.Event()
                count = 0

                async def worker(name: str) -> None:
                    nonlocal count
                    while not done.is_set():
                        try:
                            r = await c.request("chat/send", {
                                "conversation": name, "text": f"round {round_no}", "models": ["gpt-4o-mini", "echo"],
                                "tools": ["calculate"], "maxRounds": 3})
                        except (ConnectionError, Exception):
                            return
                        acknowledged[name].add(r["turnId"])
                        count += 1
                        if count >= target:
                            done.set()

                workers = [asyncio.ensure_future(worker(n)) for n in acknowledged]
                await done.wait()
                d.kill9()  # mid-flight: other turns are streaming or running tools
                totals["kills"] += 1
                await asyncio.gather(*workers, return_exceptions=True)
                await c.close()
                db = sqlite3.connect(d.paths.database)
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                totals["found"] = _check_history(db, acknowledged)
                db.close()
            d.start()  # and once more: the last kill left a stale socket and lock
            d.stop()

    asyncio.run(main())
    totals["acknowledged"] = sum(len(t) for t in acknowledged.values())
    print("crash test:", totals)
    assert totals["found"] >= totals["acknowledged"] > ROUNDS * 3
