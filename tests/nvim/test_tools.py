"""Editor context and client-side tools through a real daemon and a scripted OpenAI server: a range sent
with its file name and language, the model reading the buffer and diagnostics through tools Neovim
registered, and a side-effecting tool the user approves in Neovim."""

from __future__ import annotations

from chatd_client import Client
from scripted_openai import openai_env, text_stream, tool_call_stream

from helpers import new_daemon

SETUP = """{ tools = { extra = { {
  name = 'nvim_write_note', description = 'Write a note into the user\\'s notes', side_effects = true,
  parameters = { type = 'object', properties = { text = { type = 'string' } } },
  run = function(args) _G.notes = (_G.notes or '') .. args.text; return 'noted ' .. args.text end,
} } } }"""

# the user answers the approval prompt (any vim.ui.select UI would show it); the answer comes later, async
APPROVER = """
_G.prompts = {}
vim.ui.select = function(items, opts, on_choice)
  table.insert(_G.prompts, opts.prompt)
  vim.schedule(function() on_choice('Allow', 1) end)
end
"""

ROUNDS = [
    [("call_r", "nvim_read_buffer", {}), ("call_d", "nvim_diagnostics", {"path": "hello.py"})],
    [("call_w", "nvim_write_note", {"text": "hi"})],
]


def handler(req):
    messages = req.json["messages"]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    done = sum(1 for m in messages[last_user:] if m["role"] == "assistant" and m.get("tool_calls"))
    if done < len(ROUNDS):
        return tool_call_stream(ROUNDS[done])
    return text_stream("It defines hello, which has a bug.")


def test_range_with_file_and_language_tools_and_approval(tmp_path, nvims, fake_openai):
    server = fake_openai(handler)
    daemon = new_daemon(tmp_path, **openai_env(server.server)).start()
    try:
        with Client(daemon.socket) as c:
            c.request("conversation/create", {"name": "code", "models": ["gpt-4o-mini"]})
        (tmp_path / "work").mkdir()
        (tmp_path / "work" / "hello.py").write_text("def hello():\n    return undefined_name\n\nprint(hello())\n")
        nv = nvims(daemon, setup=SETUP, name="work")
        nv.lua(APPROVER)
        nv.cmd("edit hello.py")
        nv.lua("vim.diagnostic.set(vim.api.nvim_create_namespace('test'), 0, "
               "{ { lnum = 1, col = 4, severity = vim.diagnostic.severity.ERROR, message = 'undefined name' } })")
        nv.cmd("Chatd open code")
        nv.wait(lambda: nv.lua("local c = require('chatd.chat').chats.code; return c ~= nil and c.loaded"))
        nv.cmd("wincmd p")
        assert nv.lua("return vim.fn.expand('%:t')") == "hello.py"
        nv.cmd("1,2Chatd send What does this do?")

        nv.wait_text("code", "It defines hello, which has a bug.")
        # what the model was sent: the question, then the range with its file name and language
        first = server.requests[0].json["messages"]
        user = [m for m in first if m["role"] == "user"][-1]["content"]
        assert user == ("What does this do?\n\nFrom `hello.py` (lines 1-2, python):\n```python\n"
                        "def hello():\n    return undefined_name\n```")
        assert {t["function"]["name"] for t in server.requests[0].json["tools"]} == {
            "nvim_read_buffer", "nvim_list_buffers", "nvim_diagnostics", "nvim_write_note"}
        # the tools ran in Neovim and their answers reached the model
        results = {m["tool_call_id"]: m["content"] for m in server.requests[1].json["messages"] if m["role"] == "tool"}
        assert results["call_r"].startswith("hello.py (python, lines 1-4 of 4)\n1: def hello():\n2:     return undefined_name")
        assert results["call_d"] == "hello.py:2:5: error: undefined name"
        # the side-effecting tool waited for the user's approval, given in Neovim
        prompts = nv.lua("return _G.prompts")
        assert len(prompts) == 1 and "nvim_write_note" in prompts[0] and '"hi"' in prompts[0]
        results = {m["tool_call_id"]: m["content"] for m in server.requests[2].json["messages"] if m["role"] == "tool"}
        assert results["call_w"] == "noted hi" and nv.lua("return _G.notes") == "hi"

        transcript = nv.transcript("code")
        assert "> tool call: nvim_read_buffer()" in transcript
        assert '> tool call: nvim_write_note({"text":"hi"})' in transcript
        assert "> tool result: nvim_write_note → noted hi" in transcript
        assert transcript.count("## Assistant (gpt-4o-mini)") == 1  # one reply, however many rounds
        assert "From `hello.py` (lines 1-2, python):" in transcript
    finally:
        daemon.stop()
