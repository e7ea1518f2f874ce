"""A bounded soak run, selected by a flag: `CHATD_SOAK_SECONDS=600 scripts/test tests/soak -s`.

Mixed clients for the given time: senders, live watchers, cancels, mid-turn disconnects, failing
turns, stateless turns and wildcard watchers. At the end the daemon's RSS and open fds are flat
against a point taken after warm-up. Not part of the default test command (it takes minutes)."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from chatd_client import AsyncClient
from helpers import new_daemon

SECONDS = float(os.environ.get("CHATD_SOAK_SECONDS", "60"))


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.timeout(SECONDS * 2 + 120)
def test_soak(tmp_path):
    d = new_daemon(tmp_path).start()
    rng = random.Random(7)
    counts = {"turns": 0, "failed": 0, "cancelled": 0, "disconnects": 0, "stateless": 0}

    async def one_round(c: AsyncClient, i: int) -> None:
        name = f"soak{i % 25}"
        r = rng.random()
        if r < 0.5:
            await c.request("chat/send", {"conversation": name, "text": f"message {i}"})
            counts["turns"] += 1
        elif r < 0.6:
            reply = c.start_request("chat/send", {"conversation": name, "text": "x", "params": {"echoFailAfter": 2}})
            await reply[1]
            counts["failed"] += 1
        elif r < 0.75:
            msg_id, reply = c.start_request("chat/send", {"conversation": name, "text": "slow",
                                                          "params": {"echoDelayMs": 5}})
            c.notify("$/cancelRequest", {"id": msg_id})
            await reply
            counts["cancelled"] += 1
        elif r < 0.85:
            leaver = await AsyncClient.connect(d.socket)
            leaver.start_request("chat/send", {"conversation": name, "text": "bye", "params": {"echoDelayMs": 1}})
            await leaver.close()
            counts["disconnects"] += 1
        else:
            await c.request("chat/send", {"text": "stateless", "history": []})
            counts["stateless"] += 1

    async def main():
        watchers = [await AsyncClient.connect(d.socket) for _ in range(3)]
        for w in watchers:
            await w.request("conversation/subscribe", {"name": "*"})
            w.on_notification = lambda m, prm: None
        clients = [await AsyncClient.connect(d.socket) for _ in range(4)]
        i = 0
        warm_until = time.monotonic() + min(30.0, SECONDS / 5)
        baseline = None
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            await asyncio.gather(*(one_round(c, i + k) for k, c in enumerate(clients)))
            i += len(clients)
            if baseline is None and time.monotonic() > warm_until:
                status = await clients[0].request("daemon/status")
                baseline = (_rss_kb(d.proc.pid), status["openFds"])
        while (await clients[0].request("daemon/status"))["activeTurns"]:
            await clients[0].request("chat/send", {"conversation": "tick", "text": "tick"})
        status = await clients[0].request("daemon/status")
        final = (_rss_kb(d.proc.pid), status["openFds"])
        for c in (*clients, *watchers):
            await c.close()
        return baseline, final

    try:
        baseline, final = asyncio.run(main())
    finally:
        d.stop()
    print("soak:", counts, "rss/fds after warm-up", baseline, "at the end", final)
    assert final[1] <= baseline[1]
    assert final[0] <= baseline[0] * 1.2
