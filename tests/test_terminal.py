"""The `chat` terminal client as a user runs it: a real subprocess, stdin and stdout, against a daemon."""

from __future__ import annotations

import subprocess
import sys

from chatd_client import Client


def _chat(env, stdin: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "chatd_client.terminal", *args], input=stdin, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_chat_streams_replies_and_runs_the_seed_commands(daemon):
    out = _chat(daemon.env, "hello there\nhistory\nclear\nhistory\nquit\n", "notes", "-s", "Be brief.")
    assert "offline `echo` model" in out
    assert "Assistant (echo): [echo: the offline model" in out and "You said: hello there" in out
    assert "1. user: hello there" in out and "2. assistant: [echo" in out
    assert "History cleared!" in out
    assert out.rstrip().endswith("Goodbye!")
    conv = Client(daemon.socket).request("conversation/get", {"name": "notes"})
    assert conv["conversation"]["system"] == "Be brief." and conv["messages"] == []


def test_chat_continues_a_conversation_started_elsewhere(daemon):
    Client(daemon.socket).request("chat/send", {"conversation": "shared", "text": "from a script"})
    out = _chat(daemon.env, "/history\n/quit\n", "shared")
    assert "conversation 'shared' (2 messages" in out and "1. user: from a script" in out


def test_chat_starts_the_daemon_when_none_runs(tmp_path):
    from helpers import new_daemon

    d = new_daemon(tmp_path)
    out = _chat(d.env, "hi\nquit\n")
    assert "You said: hi" in out
    with Client(d.socket) as c:
        status = c.request("daemon/status")
        c.request("daemon/shutdown")
    assert status["socketPath"] == d.socket
