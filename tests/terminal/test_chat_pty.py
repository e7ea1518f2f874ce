"""`chat` on a real pseudo-terminal against a real daemon: streaming markdown, readline history, Ctrl-C,
and turns from other clients appearing live while the user is typing at the prompt.

The echo model's `echoDelayMs` slows a reply down so that a test can look at it mid-stream; every wait is
on what the terminal shows or on the daemon's state, never on elapsed time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chatd_client import Client
from pty_driver import PtyProgram

CHAT = [sys.executable, "-m", "chatd_client.terminal"]
CHATD = [sys.executable, "-m", "chatd"]


@pytest.fixture
def chat(daemon):
    programs: list[PtyProgram] = []

    def start(*args: str) -> PtyProgram:
        program = PtyProgram([*CHAT, *args], daemon.env)
        programs.append(program)
        return program

    yield start
    for program in programs:
        program.close()


def _get(daemon, name: str) -> dict:
    with Client(daemon.socket) as c:
        return c.request("conversation/get", {"name": name})


def _create(daemon, name: str, **params) -> None:
    with Client(daemon.socket) as c:
        c.request("conversation/create", {"name": name, "params": params})


def test_reply_streams_as_rendered_markdown_and_input_history_recalls_lines(daemon, chat):
    _create(daemon, "notes", echoDelayMs=100)
    term = chat("notes")
    term.expect(r"conversation 'notes' \(0 messages")
    term.expect("offline `echo` model")
    term.expect("You: ")
    term.type("hello **world**\r")
    term.expect(r"Assistant \(echo\): \[echo:")
    mid = _get(daemon, "notes")  # the first words are on screen while the turn is still streaming
    assert mid["messages"] == [] and mid["activeTurn"] is not None
    term.expect(r"You said: hello \*\*world")  # raw while the line streams ...
    term.expect(r"\[echo, \d+ in / \d+ out tokens\]")
    assert "You said: hello \x1b[1mworld\x1b[0m" in term.raw  # ... then rewritten rendered
    term.expect("You: ")
    term.type("/history\r")
    term.expect(r"1\. user: hello \*\*world\*\*")
    term.expect(r"2\. assistant: \[echo")
    term.expect("You: ")
    term.type("\x1b[A\x1b[A\r")  # Up twice: back past /history to the message, sent again
    term.expect(r"You said: hello \*\*world")
    term.expect(r"\[echo, ")
    term.type("/quit\r")
    term.expect("Goodbye!")
    assert term.wait() == 0
    assert len(_get(daemon, "notes")["messages"]) == 4
    with open(os.path.join(daemon.paths.data_dir, "chat_history")) as f:
        assert f.read().splitlines() == ["hello **world**", "/history", "hello **world**", "/quit"]


def test_history_carries_over_to_the_next_session(daemon, chat):
    first = chat("a")
    first.expect("You: ")
    first.type("remember me\r")
    first.expect(r"\[echo, ")
    first.expect("You: ")  # readline reads keys again (a ^D typed ahead is the line discipline's, not ours)
    first.type("\x04")  # Ctrl-D
    first.expect("Goodbye!")
    assert first.wait() == 0
    second = chat("b")
    second.expect("You: ")
    second.type("\x1b[A\r")
    second.expect("You said: remember me")
    assert [m["text"] for m in _get(daemon, "b")["messages"]][0] == "remember me"


def test_ctrl_c_cancels_the_streaming_reply_and_stores_nothing(daemon, chat):
    _create(daemon, "slow", echoDelayMs=200)
    term = chat("slow")
    term.expect("You: ")
    term.type("count to a hundred\r")
    term.expect(r"Assistant \(echo\): \[echo:")
    assert _get(daemon, "slow")["activeTurn"] is not None
    term.type("\x03")  # Ctrl-C mid-stream
    term.expect(r"\[cancelled: nothing was saved\]")
    term.expect("You: ")  # the program goes on
    after = _get(daemon, "slow")
    assert after["messages"] == [] and after["activeTurn"] is None and after["conversation"]["lastSeq"] == 0
    term.type("half a line")
    term.expect("half a line")
    term.type("\x03")  # Ctrl-C at the prompt drops the line, not the program
    term.expect(r"\(Ctrl-D or /quit to leave\)")
    term.expect("You: ")
    term.type("/cost\r")
    term.expect(r"This session: 0 turns")
    term.type("quit\r")
    term.expect("Goodbye!")
    assert term.wait() == 0
    assert _get(daemon, "slow")["messages"] == []


def test_a_turn_from_another_client_appears_live_while_the_user_types(daemon, chat):
    _create(daemon, "shared", echoDelayMs=40)
    term = chat("shared")
    term.expect("You: ")
    term.type("my draft")
    term.expect("my draft")  # echoed by readline: the user is mid-line
    other = subprocess.Popen([*CHATD, "call", "chat/send",
                              json.dumps({"conversation": "shared", "text": "alpha\nbravo\ncharlie"})],
                             env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        term.expect("── another client ──")
        term.expect("User: alpha")
        term.expect(r"Assistant \(echo\): \[echo: .*You said: alpha\n")
        term.expect("bravo\n")
        term.expect("charlie\n")
        term.expect(r"\[echo, \d+ in / \d+ out tokens\]")
        term.expect("You: my draft")  # the prompt comes back with what was typed so far
        assert other.wait(20) == 0
    finally:
        if other.poll() is None:
            other.kill()
        other.communicate()
    term.type(" continued\r")
    term.expect("You said: my draft continued")
    term.expect(r"\[echo, ")
    texts = [m["text"] for m in _get(daemon, "shared")["messages"] if m["role"] == "user"]
    assert texts == ["alpha\nbravo\ncharlie", "my draft continued"]


def test_another_clients_reply_shows_line_by_line_while_it_streams(daemon, chat):
    _create(daemon, "live", echoDelayMs=50)
    term = chat("live")
    term.expect("You: ")
    lines = [f"line{i:02}" for i in range(40)]
    other = subprocess.Popen([*CHATD, "call", "chat/send", json.dumps({"conversation": "live", "text": "\n".join(lines)})],
                             env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        term.expect(r"You said: line00\n")
        term.expect("line01\n")
        # Shown while the turn is still streaming (38 more lines to come): then cancel it from here.
        with Client(daemon.socket) as c:
            assert c.request("conversation/get", {"name": "live"})["activeTurn"] is not None
            assert c.request("chat/cancel", {"conversation": "live"}) == {"cancelled": True}
        term.expect(r"\[the other client's turn cancelled\]")
        term.expect("You: ")
        assert other.wait(20) == 1  # chatd call reports the -32800
    finally:
        if other.poll() is None:
            other.kill()
        other.communicate()
    assert "line39" not in term.text().split("Assistant (echo)")[-1]  # the user's message held it, not the reply
    assert _get(daemon, "live")["messages"] == []
