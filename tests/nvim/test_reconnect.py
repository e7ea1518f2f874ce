"""The daemon dies mid-reply and comes back: the plugin says so inline, keeps what was committed,
gives the user's words back, reconnects by itself, and the buffer matches the daemon again."""

from __future__ import annotations

from chatd_client import Client

ECHO = "[echo: the offline model; set an API key to use a real one] You said: "


def test_daemon_killed_and_restarted(daemon, nvims):
    with Client(daemon.socket) as c:
        c.request("conversation/create", {"name": "sturdy"})
        c.request("chat/send", {"conversation": "sturdy", "text": "kept"})
        c.request("conversation/update", {"name": "sturdy", "params": {"echoDelayMs": 100}})
    nv = nvims(daemon)
    nv.cmd("Chatd open sturdy")
    nv.wait_text("sturdy", ECHO + "kept")
    committed = nv.transcript("sturdy")

    nv.lua("require('chatd.chat').chats.sturdy:send('lost words')")
    nv.wait_text("sturdy", "[echo: the")  # mid-stream
    daemon.kill9()
    text = nv.wait_text("sturdy", "lost the daemon")
    assert "the reply in progress was not saved" in text
    transcript = nv.transcript("sturdy")
    assert transcript.startswith(committed.rstrip("\n"))  # the committed turn is intact
    assert "lost words" not in transcript  # the void turn is gone...
    assert nv.lua("return require('chatd.chat').chats.sturdy:input_text()") == "lost words"  # ...words kept
    assert "daemon lost" in nv.lua("return require('chatd').statusline()")

    daemon.start()  # the plugin only polls the socket: it never races to start a daemon of its own
    nv.wait_text("sturdy", "reconnected to the daemon")
    nv.wait(lambda: nv.lua("return require('chatd.client').state") == "ready")
    nv.lua("require('chatd.chat').chats.sturdy:send()")  # resend the words the input kept
    nv.wait_text("sturdy", ECHO + "lost words")
    with Client(daemon.socket) as c:
        history = c.request("conversation/get", {"name": "sturdy"})["messages"]
    assert [m["text"] for m in history] == ["kept", ECHO + "kept", "lost words", ECHO + "lost words"]
    # and the buffer shows exactly that history (plus the notes about the outage)
    lines = [ln for ln in nv.transcript("sturdy").split("\n") if ln and not ln.startswith(">")]
    assert lines == ["## You", "kept", "## Assistant (echo)", ECHO + "kept",
                     "## You", "lost words", "## Assistant (echo)", ECHO + "lost words"]
