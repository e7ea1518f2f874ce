"""The daemon as a process: lock, stale socket, permissions, peer uid, signals, kill -9, stdio bridge."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys

import pytest

from chatd import protocol as p
from chatd_client import AsyncClient, Client
from helpers import commit_and_die, new_daemon, wait_for


def _chatd(env, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatd", *args], env=env, capture_output=True, text=True,
                          timeout=60, **kw)


def test_second_serve_refuses_with_a_clear_message(daemon):
    second = _chatd(daemon.env, "serve")
    assert second.returncode == 1
    assert "already running" in second.stderr and str(daemon.proc.pid) in second.stderr
    assert Client(daemon.socket).request("daemon/status")["pid"] == daemon.proc.pid


def test_stale_socket_is_replaced(tmp_path):
    d = new_daemon(tmp_path)
    os.makedirs(d.paths.runtime_dir, mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(d.socket)  # a socket file nobody listens on, as a crashed daemon leaves
    stale.close()
    d.start()
    try:
        assert Client(d.socket).request("daemon/status")["pid"] == d.proc.pid
    finally:
        d.stop()


def test_permissions(daemon):
    mode = lambda path: stat.S_IMODE(os.stat(path).st_mode)  # noqa: E731
    assert mode(daemon.paths.runtime_dir) == 0o700
    assert stat.S_ISSOCK(os.stat(daemon.socket).st_mode) and mode(daemon.socket) == 0o600
    Client(daemon.socket).request("chat/send", {"conversation": "perm", "text": "x"})
    assert mode(daemon.paths.database) == 0o600
    assert mode(daemon.paths.data_dir) == 0o700
    assert mode(daemon.paths.log_file) == 0o600


NOBODY = 65534
_can_switch_uid = os.geteuid() == 0 and shutil.which("setpriv") is not None
_connect_as_nobody = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1])\n"
    "except OSError as e:\n"
    "    print('refused', e.errno); sys.exit(0)\n"
    "try:\n"
    "    s.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon/status\"}\\n')\n"
    "    print('closed' if s.recv(100) == b'' else 'answered')\n"
    "except (ConnectionResetError, BrokenPipeError):\n"
    "    print('closed')\n"
)


@pytest.mark.skipif(not _can_switch_uid, reason="needs root and setpriv to act as a second user")
def test_another_uid_cannot_connect(tmp_path):
    import tempfile

    # The socket goes under a directory the second user can traverse, so each layer is tested alone.
    outer = tempfile.mkdtemp(prefix="chatd-uid-")
    os.chmod(outer, 0o755)
    d = new_daemon(tmp_path, CHATD_SOCKET=os.path.join(outer, "run", "chatd.sock"))
    d.start()
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 sys.executable, "-c", _connect_as_nobody, d.socket]
    try:
        # Layer 1: the 0700 directory and 0600 socket keep other users out.
        out = subprocess.run(as_nobody, capture_output=True, text=True, timeout=30)
        assert out.stdout.startswith("refused 13"), out
        # Layer 2: even with the file modes opened up, the peer-uid check closes the connection unanswered.
        os.chmod(d.paths.runtime_dir, 0o755)
        os.chmod(d.socket, 0o666)
        out = subprocess.run(as_nobody, capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "closed", out
        assert f"refused a connection from uid {NOBODY}" in d.log()
        assert Client(d.socket).request("daemon/status")["connections"] == 1
    finally:
        d.stop()
        shutil.rmtree(outer, ignore_errors=True)


def test_sigterm_cancels_in_flight_turns_cleanly(daemon):
    async def main():
        c = await AsyncClient.connect(daemon.socket)
        await c.request("conversation/create", {"name": "slow"})
        await c.request("conversation/subscribe", {"name": "slow"})
        msg_id, reply = c.start_request("chat/send", {"conversation": "slow", "text": "long one",
                                                      "params": {"echoDelayMs": 50}})
        while (await c.notifications.get())[0] != "chat/delta":
            pass
        daemon.proc.send_signal(signal.SIGTERM)
        reply = await asyncio.wait_for(reply, 10)
        assert reply["error"]["code"] == p.REQUEST_CANCELLED
        await c.close()

    asyncio.run(main())
    assert daemon.proc.wait(10) == 0
    assert not os.path.exists(daemon.socket)
    db = sqlite3.connect(daemon.paths.database)
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_daemon_shutdown_method_and_chatd_stop(daemon):
    assert _chatd(daemon.env, "status").returncode == 0
    stop = _chatd(daemon.env, "stop")
    assert stop.returncode == 0 and "stopped" in stop.stderr
    assert daemon.proc.wait(10) == 0
    status = _chatd(daemon.env, "status")
    assert status.returncode == 1 and "no chatd daemon" in status.stderr


def test_kill_9_mid_turns_keeps_every_acknowledged_turn(tmp_path):
    d = new_daemon(tmp_path).start()
    acknowledged: list[int] = []

    async def main():
        c = await AsyncClient.connect(d.socket)
        for i in range(50):
            if i == 25:
                # turn 25 is mid-stream when the daemon dies
                c.start_request("chat/send", {"conversation": "k", "text": f"turn {i}",
                                              "params": {"echoDelayMs": 30}})
                await c.request("conversation/subscribe", {"name": "k"})
                while (await c.notifications.get())[0] != "chat/delta":
                    pass
                d.kill9()
                return
            r = await c.request("chat/send", {"conversation": "k", "text": f"turn {i}"})
            acknowledged.append(r["message"]["seq"])

    asyncio.run(main())
    db = sqlite3.connect(d.paths.database)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    d.start()  # the stale socket and the lock of the dead daemon do not stop a restart
    try:
        got = Client(d.socket).request("conversation/get", {"name": "k"})
        users = [m["text"] for m in got["messages"] if m["role"] == "user"]
        assert users == [f"turn {i}" for i in range(25)]
        assert [m["seq"] for m in got["messages"]] == list(range(1, 51))
        assert acknowledged == list(range(2, 51, 2))
        assert got["conversation"]["lastSeq"] == 50
    finally:
        d.stop()


def test_a_daemon_folds_at_start_what_a_dead_process_left_unfolded(tmp_path):
    """Schema v9 folds after writes; a process that died first leaves a tail, which the next daemon folds
    without waiting for a write or a search (and reads count it meanwhile)."""
    d = new_daemon(tmp_path)
    commit_and_die(d.paths.database, "a", "walrus")
    db = sqlite3.connect(d.paths.database)
    folded = "SELECT folded_seq, message_count FROM conversations WHERE name = 'a'"
    assert db.execute(folded).fetchone() == (0, 0)
    d.start()
    try:
        assert Client(d.socket).request("conversation/get", {"name": "a"})["conversation"]["messageCount"] == 1
        wait_for(lambda: db.execute(folded).fetchone() == (1, 1), what="the dead process's turn folded")
    finally:
        d.stop()
        db.close()


def _lsp(msg: dict) -> bytes:
    return p.frame_lsp(p.encode(msg))


_readers: dict[int, tuple[p.FrameDecoder, list[bytes]]] = {}


def _read_lsp(stream, want_id):
    """Messages from a stdio stream until the reply to `want_id`; frames read past it wait for the next call."""
    decoder, backlog = _readers.setdefault(stream.fileno(), (p.FrameDecoder(lsp_only=True), []))
    seen = []
    while True:
        while backlog:
            msg = json.loads(backlog.pop(0))
            seen.append(msg)
            if msg.get("id") == want_id and "method" not in msg:
                return msg, seen
        data = os.read(stream.fileno(), 65536)
        assert data, f"stream ended before reply {want_id}; saw {seen}"
        backlog.extend(body for body in decoder.feed(data) if type(body) is bytes)


def test_stdio_bridge_shares_the_daemon_with_a_socket_client(daemon):
    bridge = subprocess.Popen([sys.executable, "-m", "chatd", "stdio"], env=daemon.env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        bridge.stdin.write(_lsp({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                 "params": {"clientInfo": {"name": "test-editor"}}}))
        bridge.stdin.write(_lsp({"jsonrpc": "2.0", "id": 2, "method": "chat/send",
                                 "params": {"conversation": "shared", "text": "from stdio"}}))
        bridge.stdin.flush()
        init, _ = _read_lsp(bridge.stdout, 1)
        assert init["result"]["serverInfo"]["name"] == "chatd"
        reply, seen = _read_lsp(bridge.stdout, 2)
        assert reply["result"]["message"]["text"].endswith("You said: from stdio")
        assert any(m.get("method") == "chat/delta" for m in seen)
        with Client(daemon.socket) as sock_client:
            got = sock_client.request("conversation/get", {"name": "shared"})
            assert [m["text"] for m in got["messages"]][0] == "from stdio"
            sock_client.request("chat/send", {"conversation": "shared", "text": "from socket"})
        bridge.stdin.write(_lsp({"jsonrpc": "2.0", "id": 3, "method": "conversation/get",
                                 "params": {"name": "shared"}}))
        bridge.stdin.flush()
        got, _ = _read_lsp(bridge.stdout, 3)
        assert [m["text"] for m in got["result"]["messages"] if m["role"] == "user"] == ["from stdio", "from socket"]
        assert got["result"]["messages"][0]["turnId"]
        status = Client(daemon.socket).request("daemon/status")
        assert status["pid"] == daemon.proc.pid  # the bridge used the running daemon
    finally:
        _readers.pop(bridge.stdout.fileno(), None)
        bridge.stdin.close()
        assert bridge.wait(10) == 0


def test_two_stdio_bridges_started_at_once_leave_one_daemon(tmp_path):
    d = new_daemon(tmp_path)
    bridges = [subprocess.Popen([sys.executable, "-m", "chatd", "stdio"], env=d.env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        pids = []
        for b in bridges:
            b.stdin.write(_lsp({"jsonrpc": "2.0", "id": 1, "method": "daemon/status"}))
            b.stdin.flush()
            reply, _ = _read_lsp(b.stdout, 1)
            pids.append(reply["result"]["pid"])
        assert pids[0] == pids[1]
        assert Client(d.socket).request("daemon/status")["connections"] == 3
        # exactly one serving daemon: the lock file names it, and it is alive
        with open(d.paths.lock) as f:
            assert int(f.read()) == pids[0]
        os.kill(pids[0], 0)
    finally:
        for b in bridges:
            _readers.pop(b.stdout.fileno(), None)
            b.stdin.close()
            b.wait(10)
        Client(d.socket).request("daemon/shutdown")


def test_stdio_standalone_runs_the_engine_on_the_same_store(daemon):
    Client(daemon.socket).request("chat/send", {"conversation": "both", "text": "via daemon"})
    solo = subprocess.Popen([sys.executable, "-m", "chatd", "stdio", "--standalone"], env=daemon.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        solo.stdin.write(_lsp({"jsonrpc": "2.0", "id": 1, "method": "chat/send",
                               "params": {"conversation": "both", "text": "via standalone"}}))
        solo.stdin.flush()
        reply, _ = _read_lsp(solo.stdout, 1)
        assert reply["result"]["message"]["seq"] == 4
        solo.stdin.write(_lsp({"jsonrpc": "2.0", "id": 2, "method": "daemon/status"}))
        solo.stdin.flush()
        status, _ = _read_lsp(solo.stdout, 2)
        assert status["result"]["pid"] == solo.pid and status["result"]["socketPath"] is None
    finally:
        _readers.pop(solo.stdout.fileno(), None)
        solo.stdin.close()
        assert solo.wait(10) == 0
    # the daemon picks up the standalone engine's turn before its own next one
    r = Client(daemon.socket).request("chat/send", {"conversation": "both", "text": "daemon again"})
    assert r["message"]["seq"] == 6
    got = Client(daemon.socket).request("conversation/get", {"name": "both"})
    assert [m["text"] for m in got["messages"] if m["role"] == "user"] == ["via daemon", "via standalone",
                                                                              "daemon again"]
