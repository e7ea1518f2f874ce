"""Slow and stuck clients, resource limits, and no leaks after thousands of failures."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from chatd import protocol as p
from chatd_client import AsyncClient, Client, RpcError
from helpers import new_daemon


def _daemon(tmp_path, limits: str):
    d = new_daemon(tmp_path)
    os.makedirs(os.path.dirname(d.paths.config_file), exist_ok=True)
    with open(d.paths.config_file, "w") as f:
        f.write("[limits]\n" + limits)
    return d.start()


def _raw_subscriber(sock_path: str, name: str) -> socket.socket:
    """A client with a tiny receive buffer that subscribes, then stops reading."""
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(sock_path)
    s.sendall(p.frame_lsp(p.encode({"jsonrpc": "2.0", "id": 1, "method": "conversation/subscribe",
                                    "params": {"name": name}})))
    return s


def _read_all_lsp(s: socket.socket) -> list[dict]:
    s.settimeout(10)
    decoder, out = p.FrameDecoder(lsp_only=True), []
    s.shutdown(socket.SHUT_WR)
    while data := s.recv(1 << 20):
        out.extend(p.decode(b) for b in decoder.feed(data) if type(b) is bytes)
    return out


LONG = " ".join(f"w{i}" for i in range(40_000))


def test_a_slow_reader_gets_merged_deltas_and_blocks_nobody(tmp_path):
    d = _daemon(tmp_path, "output-high-water = 65536\noutput-hard-cap = 268435456\nstuck-client-timeout = 60\n")
    try:
        Client(d.socket).request("conversation/create", {"name": "big"})
        slow = _raw_subscriber(d.socket, "big")
        with Client(d.socket) as sender:
            result = sender.request("chat/send", {"conversation": "big", "text": LONG})  # not blocked by `slow`
            assert Client(d.socket).request("daemon/status")["activeTurns"] == 0
        got = _read_all_lsp(slow)
        deltas = [m["params"] for m in got if m.get("method") == "chat/delta"]
        assert "".join(x["text"] for x in deltas) == result["message"]["text"]  # nothing lost
        words = len(result["message"]["text"].split())  # the echo model streams one delta per word
        assert len(deltas) < words / 10  # merged while the reader was behind
        methods = [m.get("method") for m in got if "method" in m]
        assert methods.index("conversation/changed") > max(i for i, m in enumerate(methods) if m == "chat/delta")
    finally:
        d.stop()


def test_a_stuck_reader_is_disconnected_with_a_log_line(tmp_path):
    d = _daemon(tmp_path, "output-high-water = 16384\nstuck-client-timeout = 0.5\n")
    try:
        Client(d.socket).request("conversation/create", {"name": "big"})
        stuck = _raw_subscriber(d.socket, "big")
        with Client(d.socket) as sender:
            sender.request("chat/send", {"conversation": "big", "text": LONG})
            # Reading would unstick it: ask the daemon (round trips, not sleeps) until it dropped the client.
            deadline = time.monotonic() + 10
            while sender.request("daemon/status")["connections"] > 1:
                assert time.monotonic() < deadline, "the stuck client was never disconnected"
            assert "read nothing for 0.5s" in d.log()
            stuck.settimeout(10)
            got = b""
            while chunk := stuck.recv(1 << 20):  # what the kernel held, then end of stream
                got += chunk
            assert b"chat/turnStarted" in got and b"chat/turnEnded" not in got  # the rest was dropped
    finally:
        d.stop()


def test_connection_and_turn_limits_refuse_clearly(tmp_path):
    d = _daemon(tmp_path, "max-connections = 3\nmax-turns-per-connection = 2\n")
    try:
        held = [Client(d.socket) for _ in range(3)]
        held[0].request("daemon/status")
        extra = socket.socket(socket.AF_UNIX)
        extra.connect(d.socket)
        extra.settimeout(10)
        reply = b""
        while chunk := extra.recv(4096):
            reply += chunk
        (body,) = p.FrameDecoder(lsp_only=True).feed(reply)
        assert p.decode(body)["error"] == {"code": p.LIMIT_EXCEEDED, "message": "too many connections to chatd"}
        held[2].close()  # make room for the next client

        async def too_many_turns():
            c = await AsyncClient.connect(d.socket)
            slow = {"text": "a b c d e f g h", "params": {"echoDelayMs": 30}}
            first = [c.start_request("chat/send", {"conversation": f"t{i}", **slow})[1] for i in range(2)]
            with pytest.raises(RpcError) as err:
                await c.request("chat/send", {"conversation": "t3", **slow})
            assert err.value.code == p.LIMIT_EXCEEDED and "2 chat/send requests" in err.value.message
            assert all("result" in r for r in await asyncio.gather(*first))
            await c.close()

        asyncio.run(too_many_turns())
        for c in held[:2]:
            c.close()
    finally:
        d.stop()


def test_no_leaks_after_a_thousand_failures_disconnects_and_cancels(tmp_path):
    d = new_daemon(tmp_path).start()
    try:
        async def main():
            c = await AsyncClient.connect(d.socket)
            await c.request("chat/send", {"conversation": "warm", "text": "warm up"})
            before = await c.request("daemon/status")
            # 1,000 failed turns
            failed = await asyncio.gather(*(c.start_request("chat/send", {
                "conversation": f"fail{i % 50}", "text": "x", "params": {"echoFailAfter": 1}})[1]
                for i in range(1000)))
            assert all(r["error"]["code"] == p.TURN_FAILED for r in failed)
            # 1,000 client disconnects mid-stream (their turns finish and commit)
            for batch in range(10):
                leavers = [await AsyncClient.connect(d.socket) for _ in range(100)]
                for i, leaver in enumerate(leavers):
                    leaver.start_request("chat/send", {"conversation": f"dc{i}", "text": "bye now",
                                                       "params": {"echoDelayMs": 1}})
                await asyncio.gather(*(leaver.close() for leaver in leavers))
            # 1,000 cancels
            for i in range(1000):
                msg_id, reply = c.start_request("chat/send", {"conversation": f"cx{i % 20}", "text": "stop me",
                                                              "params": {"echoDelayMs": 50}})
                c.notify("$/cancelRequest", {"id": msg_id})
                assert (await reply)["error"]["code"] == p.REQUEST_CANCELLED
            # let the abandoned turns finish: wait until nothing is active
            while (status := await c.request("daemon/status"))["activeTurns"] or status["connections"] > 1:
                await c.request("chat/send", {"conversation": "tick", "text": "tick"})
            after = status
            await c.close()
            return before, after

        before, after = asyncio.run(main())
        print("leak check before/after:", {k: (before[k], after[k]) for k in ("openFds", "tasks", "connections")})
        assert after["openFds"] <= before["openFds"]
        assert after["tasks"] <= before["tasks"]
        assert after["connections"] == before["connections"] == 1
    finally:
        d.stop()
