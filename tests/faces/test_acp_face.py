"""`chatd acp` driven by the official ACP Python SDK (`agent-client-protocol`), as an editor would drive it:
a real `chatd serve` subprocess, the agent as a subprocess attached to it, a scripted fake OpenAI model."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import acp
from acp import schema

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from chatd_client import AsyncClient  # noqa: E402
from helpers import new_daemon  # noqa: E402
from scripted_openai import FakeServer, openai_env, text_stream, tool_call_stream  # noqa: E402


class Editor:
    """The ACP client side: records every session/update and answers permission requests."""

    def __init__(self, allow: bool = True) -> None:
        self.updates: list[tuple[str, Any]] = []
        self.permissions: list[schema.RequestPermissionRequest] = []
        self.allow = allow
        self.changed = asyncio.Event()

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.updates.append((session_id, update))
        self.changed.set()

    async def request_permission(self, session_id: str, tool_call: Any, options: list[Any],
                                 **kwargs: Any) -> schema.RequestPermissionResponse:
        self.permissions.append(schema.RequestPermissionRequest(session_id=session_id, tool_call=tool_call,
                                                                options=options))
        kind = "allow_once" if self.allow else "reject_once"
        chosen = next(o.option_id for o in options if o.kind == kind)
        return schema.RequestPermissionResponse(outcome=schema.AllowedOutcome(option_id=chosen, outcome="selected"))

    def texts(self, session_id: str, kind: str) -> str:
        return "".join(u.content.text for s, u in self.updates if s == session_id and u.session_update == kind)

    def of(self, kind: str) -> list[Any]:
        return [u for _, u in self.updates if u.session_update == kind]

    async def until(self, predicate, timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)


def _model(req):
    """Plain text replies naming what the model heard; `note ...` asks for the side-effecting tool first."""
    messages = req.json["messages"]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    said = messages[last_user]["content"]
    if said.startswith("note ") and not any(m["role"] == "tool" for m in messages[last_user:]):
        return tool_call_stream([("call_note1", "write_note", {"text": said[5:]})])
    if any(m["role"] == "tool" for m in messages[last_user:]):
        return text_stream(f"tool said: {messages[-1]['content']}")
    return text_stream(f"heard: {said}")


async def _session(tmp_path, body, **env):
    async with FakeServer(_model) as server:
        d = new_daemon(tmp_path, **openai_env(server), **env)
        d.start()
        try:
            editor = Editor()
            async with acp.spawn_agent_process(editor, sys.executable, "-m", "chatd", "acp", "--no-start",
                                               env=d.env) as (conn, proc):
                init = await conn.initialize(protocol_version=acp.PROTOCOL_VERSION,
                                             client_info=schema.Implementation(name="test-editor", version="1"))
                assert init.protocol_version == 1 and init.agent_capabilities.load_session
                assert init.agent_capabilities.session_capabilities.list is not None
                await body(d, conn, editor, server)
        finally:
            d.stop()


def test_full_session_streams_and_is_shared_live_with_another_client(tmp_path):
    async def body(d, conn, editor, server):
        sid = (await conn.new_session(cwd=str(tmp_path), mcp_servers=[])).session_id
        async with await AsyncClient.connect(d.socket) as other:
            snapshot = await other.request("conversation/subscribe", {"name": sid})  # the session is a conversation
            assert snapshot["messages"] == []
            reply = await conn.prompt(session_id=sid, prompt=[acp.text_block("hello there")])
            assert reply.stop_reason == "end_turn"
            assert editor.texts(sid, "agent_message_chunk") == "heard: hello there"
            assert editor.of("user_message_chunk") == []  # the editor's own prompt is not echoed back
            seen = []
            while not other.notifications.empty():
                seen.append(other.notifications.get_nowait())
            assert "".join(x["text"] for m, x in seen if m == "chat/delta") == "heard: hello there"
            # a turn sent by the other client shows up in the ACP session, live
            await other.request("chat/send", {"conversation": sid, "text": "from the terminal"})
            await editor.until(lambda: "heard: from the terminal" in editor.texts(sid, "agent_message_chunk"))
            assert editor.texts(sid, "user_message_chunk") == "from the terminal"
            # streamed, not one block: a reply whose words arrive apart reaches the editor in pieces
            before = len(editor.of("agent_message_chunk"))
            slow = await other.request("chat/send", {"conversation": sid, "text": "one two three four",
                                                     "models": ["echo"], "params": {"echoDelayMs": 5}})
            await editor.until(lambda: editor.texts(sid, "agent_message_chunk").endswith("one two three four"))
            assert len(editor.of("agent_message_chunk")) - before > 4
            assert slow["message"]["text"].endswith("one two three four")
        listed = await conn.list_sessions(cwd=str(tmp_path))
        assert sid in [s.session_id for s in listed.sessions]

    asyncio.run(_session(tmp_path, body))


def test_tool_call_asks_permission_and_reports_status(tmp_path):
    async def body(d, conn, editor, server):
        async with await AsyncClient.connect(d.socket) as owner:  # an editor-side tool with side effects
            invoked = []

            async def invoke(params):
                invoked.append(params["arguments"])
                return f"noted {params['arguments']['text']}"

            owner.request_handlers["tool/invoke"] = invoke
            await owner.request("tools/register", {"tools": [{
                "name": "write_note", "sideEffects": True,
                "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}]})
            sid = (await conn.new_session(cwd=str(tmp_path), mcp_servers=[])).session_id
            reply = await conn.prompt(session_id=sid, prompt=[acp.text_block("note buy milk")])
            assert reply.stop_reason == "end_turn"
            assert invoked == [{"text": "buy milk"}]
            [asked] = editor.permissions
            assert asked.session_id == sid and asked.tool_call.tool_call_id == "call_note1"
            assert asked.tool_call.raw_input == {"text": "buy milk"}
            assert {o.kind for o in asked.options} == {"allow_once", "reject_once"}
            [start] = editor.of("tool_call")
            assert (start.tool_call_id, start.status, start.raw_input) == ("call_note1", "pending", {"text": "buy milk"})
            [done] = editor.of("tool_call_update")
            assert done.tool_call_id == "call_note1" and done.status == "completed"
            assert done.content[0].content.text == "noted buy milk"
            assert editor.texts(sid, "agent_message_chunk") == "tool said: noted buy milk"

            editor.allow = False  # refused: the tool does not run and the call is reported failed
            await conn.prompt(session_id=sid, prompt=[acp.text_block("note again")])
            assert invoked == [{"text": "buy milk"}]
            assert editor.of("tool_call_update")[-1].status == "failed"

    asyncio.run(_session(tmp_path, body))


def test_cancel_stops_the_turn_and_nothing_is_stored(tmp_path):
    async def body(d, conn, editor, server):
        async with await AsyncClient.connect(d.socket) as other:
            await other.request("conversation/create", {"name": "slow", "models": ["echo"],
                                                        "params": {"echoDelayMs": 200}})
        await conn.load_session(cwd=str(tmp_path), session_id="slow", mcp_servers=[])
        prompt = asyncio.ensure_future(conn.prompt(session_id="slow", prompt=[acp.text_block(
            "a long answer please, with many many words in it to stream slowly")]))
        await editor.until(lambda: editor.of("agent_message_chunk"))
        await conn.cancel(session_id="slow")
        reply = await asyncio.wait_for(prompt, 10)
        assert reply.stop_reason == "cancelled"
        async with await AsyncClient.connect(d.socket) as other:
            assert (await other.request("conversation/get", {"name": "slow"}))["messages"] == []

    asyncio.run(_session(tmp_path, body))


def test_load_replays_a_conversation_made_in_the_terminal(tmp_path):
    async def body(d, conn, editor, server):
        for text in ("first question", "second question"):  # `chatd call`, the terminal's scripting client
            proc = await asyncio.create_subprocess_exec(  # async: the fake model runs on this loop
                sys.executable, "-m", "chatd", "call", "chat/send",
                json.dumps({"conversation": "from-terminal", "text": text}), "--no-start",
                env=d.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert await proc.wait() == 0
        listed = await conn.list_sessions()
        assert "from-terminal" in [s.session_id for s in listed.sessions]
        await conn.load_session(cwd=str(tmp_path), session_id="from-terminal", mcp_servers=[])
        replay = [(u.session_update, u.content.text) for s, u in editor.updates if s == "from-terminal"]
        assert replay == [("user_message_chunk", "first question"), ("agent_message_chunk", "heard: first question"),
                          ("user_message_chunk", "second question"),
                          ("agent_message_chunk", "heard: second question")]
        reply = await conn.prompt(session_id="from-terminal", prompt=[acp.text_block("third")])
        assert reply.stop_reason == "end_turn"
        assert len(server.requests[-1].json["messages"]) == 5  # the history came from the store
        try:
            await conn.load_session(cwd=str(tmp_path), session_id="no-such-conversation", mcp_servers=[])
        except acp.RequestError as exc:
            assert exc.code == -32002
        else:
            raise AssertionError("loading an unknown session must fail")

    asyncio.run(_session(tmp_path, body))
