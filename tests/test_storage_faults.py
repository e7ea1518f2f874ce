"""Storage faults: a full disk mid-turn, a database locked by another process, a schema from the future.
The turn fails with a clear error, earlier history is intact, and the daemon recovers."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from chatd import protocol as p
from chatd_client import Client, RpcError
from helpers import fill_volume, new_daemon

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@needs_root
def test_disk_full_mid_turn_fails_clearly_and_recovers(tmp_path):
    d = new_daemon(tmp_path)
    os.makedirs(d.paths.data_dir, mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", d.paths.data_dir], check=True)
    try:
        d.start()
        c = Client(d.socket)
        for i in range(3):
            c.request("chat/send", {"conversation": "disk", "text": f"turn {i}"})
        filler = os.path.join(d.paths.data_dir, "filler")
        fill_volume(filler)
        big = "x " * 200_000  # a turn that needs space the volume no longer has
        with pytest.raises(RpcError) as err:
            c.request("chat/send", {"conversation": "disk", "text": big})
        assert err.value.code == p.STORAGE_ERROR
        assert "could not be written" in err.value.message and "full" in err.value.message
        got = c.request("conversation/get", {"name": "disk"})
        assert [m["text"] for m in got["messages"] if m["role"] == "user"] == ["turn 0", "turn 1", "turn 2"]
        os.unlink(filler)  # space returns
        r = c.request("chat/send", {"conversation": "disk", "text": "after"})
        assert r["message"]["seq"] == 8
        c.close()
        d.stop()
        db = sqlite3.connect(d.paths.database)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 8
        db.close()
    finally:
        d.stop()
        subprocess.run(["umount", "-l", d.paths.data_dir], check=False)


def test_a_database_locked_by_another_process_is_a_clear_error(daemon):
    c = Client(daemon.socket)
    c.request("chat/send", {"conversation": "lock", "text": "before"})
    holder = sqlite3.connect(daemon.paths.database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RpcError) as err:
            c.request("chat/send", {"conversation": "lock", "text": "while locked"})
        assert err.value.code == p.STORAGE_ERROR and "locked" in err.value.message
        assert c.request("daemon/status")["pid"] == daemon.proc.pid  # alive and answering
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    r = c.request("chat/send", {"conversation": "lock", "text": "after"})
    assert r["message"]["seq"] == 4
    got = c.request("conversation/get", {"name": "lock"})
    assert [m["text"] for m in got["messages"] if m["role"] == "user"] == ["before", "after"]


def test_a_newer_schema_on_disk_stops_the_daemon_with_a_message(tmp_path):
    d = new_daemon(tmp_path)
    os.makedirs(d.paths.data_dir, mode=0o700)
    db = sqlite3.connect(d.paths.database)
    db.execute("PRAGMA user_version = 999")
    db.close()
    out = subprocess.run([sys.executable, "-m", "chatd", "serve"], env=d.env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "newer than this chatd" in out.stderr and "upgrade chatd" in out.stderr
