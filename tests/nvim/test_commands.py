"""`:Chatd` subcommands and their completion: the picker (names, models, last activity), model from
models/list, fork, rename, clear and delete, each reflected in the buffer and in the daemon."""

from __future__ import annotations

from chatd_client import Client

PICK_FIRST_REAL = """
_G.picked = {}
vim.ui.select = function(items, opts, on_choice)
  local shown = {}
  for _, it in ipairs(items) do table.insert(shown, opts.format_item and opts.format_item(it) or tostring(it)) end
  table.insert(_G.picked, { prompt = opts.prompt, items = shown })
  local want = _G.want
  for i, s in ipairs(shown) do
    if want and s:find(want, 1, true) then return vim.schedule(function() on_choice(items[i], i) end) end
  end
  vim.schedule(function() on_choice(nil) end)
end
"""


def test_subcommands_and_completion(daemon, nvims):
    with Client(daemon.socket) as c:
        c.request("chat/send", {"conversation": "older", "text": "hi"})
        c.request("chat/send", {"conversation": "newer", "text": "hello"})
    nv = nvims(daemon)
    nv.lua(PICK_FIRST_REAL)
    assert nv.lua("return vim.fn.getcompletion('Chatd ', 'cmdline')") == [
        "add", "cancel", "clear", "delete", "fork", "model", "new", "open", "rename", "send"]
    assert nv.lua("return vim.fn.getcompletion('Chatd open ', 'cmdline')") == ["newer", "older"]
    assert "echo" in nv.lua("return vim.fn.getcompletion('Chatd model ', 'cmdline')")

    # the picker lists names, models and last activity, most recent first, and opens the choice
    nv.lua("_G.want = 'older'")
    nv.cmd("Chatd open")
    nv.wait_text("older", "You said: hi")
    items = nv.lua("return _G.picked[1].items")
    assert items[0] == "+ new conversation"
    assert items[1].startswith("newer  ·  echo  ·  2 messages  ·  ") and items[2].startswith("older  ·  echo")

    # model: picked from models/list, stored as the conversation's preferred model
    nv.lua("_G.want = 'echo'")
    nv.cmd("Chatd model")
    nv.wait_text("older", "> model: echo")
    with Client(daemon.socket) as c:
        assert c.request("conversation/get", {"name": "older"})["conversation"]["preferModel"] == "echo"

    nv.cmd("Chatd fork older-copy")
    nv.wait_text("older-copy", "You said: hi")
    assert nv.lua("return vim.b.chatd_conversation") == "older-copy"

    nv.cmd("Chatd rename renamed copy")
    nv.wait(lambda: nv.lua("return vim.b.chatd_conversation") == "renamed copy")
    assert nv.lua("return vim.api.nvim_buf_get_name(0)").endswith("chatd://renamed copy")

    nv.cmd("Chatd clear")
    nv.wait(lambda: "You said" not in nv.chat_text("renamed copy"))
    with Client(daemon.socket) as c:
        names = {x["name"] for x in c.request("conversation/list")["conversations"]}
        assert names == {"older", "newer", "renamed copy"}
        assert c.request("conversation/get", {"name": "renamed copy"})["messages"] == []

    nv.cmd("Chatd delete! renamed copy")
    nv.wait(lambda: nv.lua("return require('chatd.chat').chats['renamed copy'] == nil"))
    with Client(daemon.socket) as c:
        assert {x["name"] for x in c.request("conversation/list")["conversations"]} == {"older", "newer"}

    # another client renames a conversation open here: the buffer follows
    with Client(daemon.socket) as c:
        c.request("conversation/update", {"name": "older", "newName": "oldest"})
    nv.wait(lambda: nv.lua("return require('chatd.chat').chats.oldest ~= nil"))


def test_checkhealth(daemon, nvims):
    nv = nvims(daemon)
    nv.cmd("checkhealth chatd")
    text = "\n".join(nv.lua("return vim.api.nvim_buf_get_lines(0, 0, -1, false)"))
    assert "chatd.nvim 0.1.0" in text and "OK Neovim 0.11" in text
    assert "OK `chatd` found" in text
    assert f"OK socket reachable: {daemon.socket}" in text
    assert "OK daemon 0.1.0 (protocol 1)" in text
    assert "- echo: local, needs no key" in text and "openai" in text
    assert "WARNING no provider has a key" in text  # tests run offline: the echo model answers
    assert "ERROR" not in text
