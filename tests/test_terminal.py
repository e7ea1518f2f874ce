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


def test_chat_commands_model_fork_retry_cost_list_switch(daemon):
    out = _chat(daemon.env, "\n".join([
        "first question", "/model no-such-model", "/model echo", "/model", "/cost", "/retry", "/list",
        "/history", "/fork", "/switch other", "/system Be terse.", "/system", "/help", "/quit", ""]), "notes")
    assert "No model named 'no-such-model'" in out and "Model set to echo." in out
    assert "Models: echo; last used: echo." in out
    assert "Context: " in out and " tokens (" in out and "for echo" in out
    assert "This session: 1 turns" in out
    # /retry after a reply runs the turn again in a fork that ends before it; the original keeps its reply.
    assert "Forked 'notes' as 'notes-retry'; now in 'notes-retry'." in out
    assert out.count("Assistant (echo): [echo: the offline model; set an API key to use a real one] You said: first"
                     " question") == 2
    assert "* notes-retry" in out and "  notes " in out
    assert "Forked 'notes-retry' as 'notes-retry-fork'" in out
    assert "conversation 'other' (0 messages" in out
    assert "System prompt set." in out and "System prompt: Be terse." in out and "/fork [NAME]" in out
    with Client(daemon.socket) as c:
        def texts(name):
            return [m["text"] for m in c.request("conversation/get", {"name": name})["messages"]]
        assert len(texts("notes")) == 2 and texts("notes")[0] == "first question"
        assert texts("notes-retry")[0] == "first question" and len(texts("notes-retry")) == 2
        assert len(texts("notes-retry-fork")) == 2
        conv = c.request("conversation/get", {"name": "notes"})["conversation"]
        assert conv["models"] == ["echo"]
        assert c.request("conversation/get", {"name": "other"})["conversation"]["system"] == "Be terse."


def test_chat_retry_after_a_failed_turn_sends_it_again_in_place(daemon):
    with Client(daemon.socket) as c:
        c.request("conversation/create", {"name": "flaky", "params": {"echoFailAfter": 1}})
    out = _chat(daemon.env, "hello\n/retry\n/list\nquit\n", "flaky")
    assert out.count("Error: every model failed") == 2 and "/retry to try again" in out
    assert "Forked" not in out and "flaky-retry" not in out
