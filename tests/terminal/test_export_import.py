"""`chatd export` -> `chatd import` -> `chatd export` gives the same bytes, tool calls and results included.

The history is made the real way: a scripted OpenAI server asks for the built-in `calculate` tool, the
daemon runs it and sends the result back, and the model answers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from chatd_client import AsyncClient  # noqa: E402
from helpers import new_daemon  # noqa: E402
from scripted_openai import FakeServer, openai_env, text_stream, tool_call_stream  # noqa: E402

CHATD = [sys.executable, "-m", "chatd"]


def _chatd(env, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CHATD, *args], env=env, input=stdin, capture_output=True, timeout=60)


def _export(env, name: str) -> bytes:
    out = _chatd(env, "export", name)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _reply(req):
    """A tool call first; once the tool's result is in the request, the answer."""
    messages = req.json["messages"]
    if messages[-1]["role"] == "tool":
        return text_stream("6*7 is **42** — done ✓")
    return tool_call_stream([("call_c1", "calculate", {"expression": "6*7"})])


async def _history(sock: str) -> None:
    c = await AsyncClient.connect(sock)
    try:
        await c.request("conversation/create", {
            "name": "tools", "system": "Use tools.", "models": ["gpt-4o-mini", "echo"], "modelWeights": [3, 1],
            "params": {"temperature": 0.25, "nested": {"ünïcode": ["x", 1, None]}}})
        await c.request("chat/send", {"conversation": "tools", "text": "throwaway", "models": ["echo"]})
        await c.request("conversation/clear", {"name": "tools"})  # seqs are never reused: lastSeq > last message
        result = await c.request("chat/send", {"conversation": "tools", "text": "What is 6*7?",
                                               "models": ["gpt-4o-mini"], "tools": ["calculate"]})
        assert result["message"]["text"] == "6*7 is **42** — done ✓"
    finally:
        await c.close()


def test_export_import_export_is_byte_identical(tmp_path):
    async def make() -> bytes:
        async with FakeServer(_reply) as server:
            d = new_daemon(tmp_path / "a", **openai_env(server)).start()
            try:
                await _history(d.socket)
                original = await asyncio.to_thread(_export, d.env, "tools")
            finally:
                d.stop()
        return original

    original = asyncio.run(make())
    doc = json.loads(original)
    assert doc["format"] == "chatd.conversation" and doc["version"] == 1
    assert doc["conversation"]["lastSeq"] == 6 and [m["seq"] for m in doc["messages"]] == [3, 4, 5, 6]
    kinds = [[p["type"] for p in m["parts"]] for m in doc["messages"]]
    assert kinds == [["text"], ["toolCall"], ["toolResult"], ["text"]]
    assert doc["messages"][1]["parts"][0] == {"type": "toolCall", "id": "call_c1", "name": "calculate",
                                              "arguments": {"expression": "6*7"}}
    assert doc["messages"][2]["parts"][0]["callId"] == "call_c1" and doc["messages"][2]["role"] == "tool"

    # Into another daemon (a fresh store), from a file; then out again.
    b = new_daemon(tmp_path / "b").start()
    try:
        path = tmp_path / "tools.json"
        path.write_bytes(original)
        imported = _chatd(b.env, "import", str(path))
        assert imported.returncode == 0 and imported.stdout == b"imported tools (4 messages)\n"
        assert _export(b.env, "tools") == original
        # The same daemon: rm, import from stdin, export.
        assert _chatd(b.env, "rm", "tools").returncode == 0
        assert _chatd(b.env, "import", "-", stdin=original).returncode == 0
        assert _export(b.env, "tools") == original
        # The name is taken now; --name imports a copy, identical but for its name.
        taken = _chatd(b.env, "import", str(path))
        assert taken.returncode == 1 and b"already exists" in taken.stderr
        assert _chatd(b.env, "import", str(path), "--name", "copy").returncode == 0
        copy = json.loads(_export(b.env, "copy"))
        assert copy["conversation"].pop("name") == "copy" and doc["conversation"].pop("name") == "tools"
        assert copy == doc
        # An imported conversation goes on where it left off.
        sent = _chatd(b.env, "send", "copy", "next", "-m", "echo", "--json")
        assert json.loads(sent.stdout)["message"]["seq"] == 8
    finally:
        b.stop()


def test_import_refuses_a_broken_document(daemon):
    good = {"format": "chatd.conversation", "version": 1, "conversation": {"name": "x"},
            "messages": [{"seq": 2, "role": "user", "parts": [{"type": "text", "text": "a"}]},
                         {"seq": 1, "role": "assistant", "parts": []}]}
    out = _chatd(daemon.env, "import", "-", stdin=json.dumps(good).encode())
    assert out.returncode == 1 and b"strictly increasing" in out.stderr
    typo = {**good, "messages": [], "conversation": {"name": "x", "sytem": "oops"}}
    out = _chatd(daemon.env, "import", "-", stdin=json.dumps(typo).encode())
    assert out.returncode == 1 and b"sytem" in out.stderr
    for where in ("messages", "conversation"):  # the store keys a message by (conversation, seq) in 64 bits
        huge = {**good, "messages": [{"seq": 2**32, "role": "user", "parts": []}]} if where == "messages" else \
            {**good, "messages": [], "conversation": {"name": "x", "lastSeq": 2**32}}
        out = _chatd(daemon.env, "import", "-", stdin=json.dumps(huge).encode())
        assert out.returncode == 1 and b"<= 4294967295" in out.stderr, out.stderr
    out = _chatd(daemon.env, "import", "-", stdin=b"not json")
    assert out.returncode == 2 and b"is not JSON" in out.stderr
    assert _chatd(daemon.env, "ls").stdout == b""
