"""100,000 generated frames over one live connection (CHATD_FUZZ_FRAMES for longer runs): exactly one
reply per request, id-null errors for exactly the frames that earn one, every reply JSON-RPC 2.0, the
daemon alive, and a second connection answering throughout."""

from __future__ import annotations

import json
import os
import random
import socket
import threading

from chatd import protocol as p
from chatd_client import Client

FRAMES = int(os.environ.get("CHATD_FUZZ_FRAMES", "100000"))


def _frames(rng: random.Random, count: int):
    """(line bytes, request ids it must answer, id-null errors it must cause)."""
    next_id = 0
    for _ in range(count):
        kind = rng.random()
        next_id += 1
        if kind < 0.35:
            method = rng.choice(["daemon/status", "nope/" + str(rng.randint(0, 9)), "conversation/get",
                                 "conversation/list", "models/list", "tools/list"])
            params = rng.choice([{}, {"name": "x" * rng.randint(1, 5)}, {"name": rng.randint(0, 9)}, None,
                                 {"limit": rng.randint(-5, 5)}, {"bogus": True}])
            msg = {"jsonrpc": "2.0", "id": next_id, "method": method}
            if params is not None:
                msg["params"] = params
            yield json.dumps(msg).encode(), [next_id], 0
        elif kind < 0.45:
            yield json.dumps({"jsonrpc": "2.0", "method": "note/" + str(rng.randint(0, 99))}).encode(), [], 0
        elif kind < 0.6:  # broken JSON: one id-null parse error each
            good = json.dumps({"jsonrpc": "2.0", "id": next_id, "method": "daemon/status"})
            yield good[: rng.randint(1, len(good) - 2)].encode() + rng.choice([b"", b"\x00", b"}}"]), [], 1
        elif kind < 0.75:  # invalid envelopes with an id: answered with that id
            bad = rng.choice([{"jsonrpc": "1.0", "id": next_id, "method": "daemon/status"},
                              {"jsonrpc": "2.0", "id": next_id, "method": 5},
                              {"jsonrpc": "2.0", "id": next_id},
                              {"jsonrpc": "2.0", "id": next_id, "method": "daemon/status", "params": "s"}])
            yield json.dumps(bad).encode(), [next_id], 0
        elif kind < 0.85:  # not an object: id-null invalid request
            yield json.dumps(rng.choice([1, "x", None, True, 2.5])).encode(), [], 1
        else:  # a batch of valid and invalid elements
            items, ids, nulls = [], [], 0
            for _ in range(rng.randint(1, 6)):
                next_id += 1
                r = rng.random()
                if r < 0.5:
                    items.append({"jsonrpc": "2.0", "id": next_id, "method": "daemon/status"})
                    ids.append(next_id)
                elif r < 0.7:
                    items.append({"jsonrpc": "2.0", "method": "note"})
                else:
                    items.append(rng.choice([1, "x", []]))
                    nulls += 1
            yield json.dumps(items).encode(), ids, nulls


def test_a_hundred_thousand_frames(daemon):
    rng = random.Random(20261125)
    # the first byte picks newline-delimited JSON for the connection
    lines, expected_ids, expected_nulls = [b'{"jsonrpc":"2.0","id":"first","method":"daemon/status"}\n'], ["first"], 0
    for line, ids, nulls in _frames(rng, FRAMES):
        lines.append(line + b"\n")
        expected_ids.extend(ids)
        expected_nulls += nulls
    payload = b"".join(lines)

    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket)
    sender = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
    sender.start()
    bystander = Client(daemon.socket)
    replies: dict[object, int] = {}
    nulls = 0
    buf = b""
    answered_during = 0
    s.settimeout(120)
    while chunk := s.recv(1 << 20):
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for line in complete:
            value = json.loads(line)
            for msg in value if isinstance(value, list) else [value]:
                assert msg["jsonrpc"] == "2.0" and ("result" in msg) != ("error" in msg), msg
                if msg.get("error"):
                    assert isinstance(msg["error"]["code"], int) and msg["error"]["message"]
                    assert msg["error"]["code"] != p.INTERNAL_ERROR, msg
                if msg["id"] is None:
                    nulls += 1
                else:
                    replies[msg["id"]] = replies.get(msg["id"], 0) + 1
        if answered_during < 3:  # the other connection is served while the flood runs
            assert bystander.request("daemon/status")["pid"] == daemon.proc.pid
            answered_during += 1
    sender.join()
    assert set(replies) == set(expected_ids) and len(expected_ids) == len(set(expected_ids))
    assert set(replies.values()) == {1}
    assert nulls == expected_nulls
    assert bystander.request("daemon/status")["connections"] == 1
    assert daemon.proc.poll() is None
    print(f"fuzz: {FRAMES} frames, {len(expected_ids)} replies by id, {nulls} id-null errors")
