"""The chat buffer against a real daemon: open, send, the reply streams in, one undo step per reply,
cancel leaves nothing behind; another client's turns (and a second Neovim opening mid-turn) show live."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from chatd_client import Client

ECHO = "[echo: the offline model; set an API key to use a real one] You said: "

# A Lua probe recording every distinct state of the reply being streamed in a chat buffer.
RECORD = """
local name = ...
local chat = require('chatd.chat').chats[name]
_G.seen = {}
vim.api.nvim_buf_attach(chat.buf, false, { on_lines = function()
  vim.schedule(function()
    local live = chat.live
    if live then
      local t = {}
      for _, i in ipairs(live.items) do if i.kind == 'text' then table.insert(t, i.text) end end
      local s = table.concat(t)
      if s ~= '' and _G.seen[#_G.seen] ~= s then table.insert(_G.seen, s) end
    end
  end)
end })
"""


def _loaded(nv, name):
    return nv.wait(lambda: nv.lua("local c = require('chatd.chat').chats[...]; return c ~= nil and c.loaded", name),
                   what=f"{name} loaded")


def _history(daemon, name):
    with Client(daemon.socket) as c:
        return c.request("conversation/get", {"name": name})["messages"]


def test_open_send_stream_undo_and_cancel(daemon, nvims):
    with Client(daemon.socket) as c:
        c.request("conversation/create", {"name": "demo", "params": {"echoDelayMs": 15}})
    nv = nvims(daemon)
    nv.cmd("Chatd open demo")
    _loaded(nv, "demo")
    assert nv.lua("return vim.bo.filetype") == "markdown"
    assert nv.lua("return vim.api.nvim_buf_get_name(0)").endswith("chatd://demo")
    nv.lua(RECORD, "demo")
    before = nv.lua("return vim.fn.undotree(require('chatd.chat').chats.demo.buf).seq_last")

    # type into the input area and press the send key
    nv.lua("vim.api.nvim_buf_set_lines(0, -2, -1, false, {'first question'})")
    nv.lua("vim.api.nvim_feedkeys(vim.keycode('<C-s>'), 'x', false)")
    text = nv.wait_text("demo", ECHO + "first question")
    assert "streaming" not in nv.lua("return require('chatd').statusline()")
    seen = nv.lua("return _G.seen")
    assert len(seen) >= 5, seen  # the reply arrived in pieces, each shown as it came
    assert all(ECHO.startswith(s) or s.startswith(ECHO) for s in seen)
    lines = text.split("\n")
    assert lines[:5] == ["## You", "first question", "", "## Assistant (echo)", ECHO + "first question"]
    assert lines[-2:] == ["## You", ""] and nv.lua("return require('chatd.chat').chats.demo:input_text()") == ""
    after = nv.lua("return vim.fn.undotree(require('chatd.chat').chats.demo.buf).seq_last")
    assert after - before <= 3, (before, after)  # clear input, show the send, then the whole reply: one step
    assert [m["text"] for m in _history(daemon, "demo")] == ["first question", ECHO + "first question"]
    status = nv.lua("return require('chatd').statusline()")
    assert status.startswith("chatd: demo · echo · ") and "tok" in status

    # a second, slower reply: cancel it mid-stream
    nv.lua("require('chatd.chat').chats.demo:set_input('second question')")
    nv.lua("require('chatd.client').request('conversation/update', "
           "{ name = 'demo', params = { echoDelayMs = 60 } }, function() require('chatd.chat').chats.demo:send() end)")
    nv.wait_text("demo", "[echo: the offline")  # streaming
    nv.cmd("Chatd cancel")
    text = nv.wait_text("demo", "reply cancelled")
    assert "second question" not in nv.transcript("demo")  # the void turn is gone from the transcript...
    assert nv.lua("return require('chatd.chat').chats.demo:input_text()") == "second question"  # ...its words are back
    assert text.count("## Assistant") == 1
    assert len(_history(daemon, "demo")) == 2  # and nothing of it was committed


def test_another_client_turn_streams_live_in_two_neovims(daemon, nvims):
    with Client(daemon.socket) as c:
        c.request("conversation/create", {"name": "shared", "params": {"echoDelayMs": 80}})
    a = nvims(daemon, name="a")
    b = nvims(daemon, name="b")  # started now, so opening the conversation later is quick
    a.cmd("Chatd open shared")
    _loaded(a, "shared")
    a.lua(RECORD, "shared")

    # the terminal client sends a turn
    done = threading.Event()
    out = {}

    def terminal():
        out["p"] = subprocess.run([sys.executable, "-m", "chatd", "call", "chat/send",
                                   json.dumps({"conversation": "shared", "text": "from the terminal"})],
                                  capture_output=True, text=True, env=daemon.env, timeout=30)
        done.set()

    threading.Thread(target=terminal, daemon=True).start()
    a.wait_text("shared", "from the terminal")
    a.wait(lambda: a.lua("return #_G.seen") >= 2, what="streaming in a")

    # a second Neovim opens the conversation mid-turn: it shows what streamed so far, then the rest
    b.cmd("Chatd open shared")
    _loaded(b, "shared")
    mid = b.lua("local c = require('chatd.chat').chats.shared; return c.live and c.live.turnId or vim.NIL")
    final = ECHO + "from the terminal"
    a.wait_text("shared", final)
    b.wait_text("shared", final)
    done.wait(30)
    assert out["p"].returncode == 0, out["p"].stderr
    assert mid is not None, "b opened after the turn ended; slow the echo model down"
    assert a.transcript("shared") == b.transcript("shared")

    # b sends: a and a Python client watching the conversation see it stream
    with Client(daemon.socket, timeout=20) as watcher:
        watcher.request("conversation/subscribe", {"name": "shared"})
        b.lua("require('chatd.chat').chats.shared:send('from nvim b')")
        notes = []
        while not notes or notes[-1]["method"] != "chat/turnEnded":
            msg = watcher.read_message()
            if "method" in msg:
                notes.append(msg)
        assert notes[0]["params"]["user"]["text"] == "from nvim b"
        assert sum(1 for m in notes if m["method"] == "chat/delta") > 3
        a.wait_text("shared", ECHO + "from nvim b")
        b.wait_text("shared", ECHO + "from nvim b")
        assert a.transcript("shared") == b.transcript("shared")
    assert [m["text"] for m in _history(daemon, "shared")][-2:] == ["from nvim b", ECHO + "from nvim b"]


def test_view_follows_the_stream_unless_scrolled_away(daemon, nvims):
    with Client(daemon.socket) as c:
        for i in range(8):
            c.request("chat/send", {"conversation": "long", "text": f"turn {i}"})
    nv = nvims(daemon, setup="{ window = { layout = 'horizontal', height = 8 } }")
    nv.cmd("Chatd open long")
    nv.wait_text("long", ECHO + "turn 7")
    view = "return { vim.fn.line('w0'), vim.fn.line('w$'), vim.fn.line('$') }"
    top, bottom, last = nv.lua(view)
    assert bottom == last and top > 1  # opened at the end

    with Client(daemon.socket) as c:
        c.request("chat/send", {"conversation": "long", "text": "followed"})
    nv.wait_text("long", ECHO + "followed")
    top, bottom, last = nv.lua(view)
    assert bottom == last, (top, bottom, last)  # the window followed the reply down

    nv.cmd("normal! gg")  # the user scrolls up to read
    with Client(daemon.socket) as c:
        c.request("chat/send", {"conversation": "long", "text": "not followed"})
    nv.wait_text("long", ECHO + "not followed")
    top, bottom, last = nv.lua(view)
    assert top == 1 and bottom < last  # it stayed where the user was reading


def test_failed_turn_is_shown_inline_and_keeps_the_words(daemon, nvims):
    with Client(daemon.socket) as c:
        c.request("conversation/create", {"name": "flaky", "params": {"echoFailAfter": 3}})
    nv = nvims(daemon)
    nv.cmd("Chatd open flaky")
    _loaded(nv, "flaky")
    nv.lua("require('chatd.chat').chats.flaky:send('will fail')")
    text = nv.wait_text("flaky", "> turn failed:")
    assert "injected failure mid-stream" in text
    assert "will fail" not in nv.transcript("flaky") and "[echo:" not in text  # void text dropped
    assert nv.lua("return require('chatd.chat').chats.flaky:input_text()") == "will fail"
    assert _history(daemon, "flaky") == []
