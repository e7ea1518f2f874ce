"""The agent loop through a real daemon: a fake OpenAI server asks for tools, clients run them.

The seed's third example: `get_weather` and `calculate` are the script's own functions (client tools,
run in the client via `tool/invoke`), called twice in one model reply."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from chatd import protocol as p  # noqa: E402
from chatd_client import AsyncClient  # noqa: E402
from helpers import new_daemon  # noqa: E402
from scripted_openai import FakeServer, openai_env, text_stream, tool_call_stream  # noqa: E402

WEATHER = {"name": "get_weather", "description": "Get the current weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALC = {"name": "calculate", "description": "Evaluate a mathematical expression safely.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]}}


def _rounds(final_text: str, calls_per_round: list[list[tuple[str, str, dict]]]):
    """A fake whose reply depends on how many tool rounds this turn (since the last user message) holds."""

    def handler(req):
        messages = req.json["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        done = sum(1 for m in messages[last_user:] if m["role"] == "assistant" and m.get("tool_calls"))
        if done < len(calls_per_round):
            return tool_call_stream(calls_per_round[done])
        return text_stream(final_text)

    return handler


async def _daemon_with(tmp_path, server, **env):
    d = new_daemon(tmp_path, **openai_env(server), **env)
    d.start()
    return d


async def _drain(client: AsyncClient) -> list[tuple[str, dict]]:
    out = []
    while not client.notifications.empty():
        out.append(client.notifications.get_nowait())
    return out


def test_seed_tool_example_two_calls_in_one_reply(tmp_path):
    async def main():
        handler = _rounds("It is sunny and 72F in Paris, and 6*7 is 42.", [[
            ("call_w1", "get_weather", {"city": "Paris"}), ("call_c1", "calculate", {"expression": "6*7"})]])
        async with FakeServer(handler) as server:
            d = await _daemon_with(tmp_path, server)
            try:
                c = await AsyncClient.connect(d.socket)
                invoked = []

                async def invoke(params):
                    invoked.append((params["tool"], params["arguments"]))
                    if params["tool"] == "get_weather":
                        return f"The weather in {params['arguments']['city']} is sunny and 72F"
                    return str(eval(params["arguments"]["expression"], {"__builtins__": {}}))  # the seed's own

                c.request_handlers["tool/invoke"] = invoke
                await c.request("tools/register", {"tools": [WEATHER, CALC]})
                listed = {(t["name"], t["origin"]) for t in (await c.request("tools/list"))["tools"]}
                assert ("get_weather", "client") in listed and ("calculate", "builtin") in listed
                result = await c.request("chat/send", {
                    "conversation": "tools", "text": "Weather in Paris, and what is 6*7?",
                    "models": ["gpt-4o-mini"], "tools": ["get_weather", "calculate"], "maxRounds": 5})
                assert result["message"]["text"] == "It is sunny and 72F in Paris, and 6*7 is 42."
                assert result["finishReason"] == "stop" and result["modelUsed"] == "gpt-4o-mini"
                assert sorted(invoked) == [("calculate", {"expression": "6*7"}), ("get_weather", {"city": "Paris"})]
                history = (await c.request("conversation/get", {"name": "tools"}))["messages"]
                assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
                calls = [x for x in history[1]["parts"] if x["type"] == "toolCall"]
                assert [(x["id"], x["name"]) for x in calls] == [("call_w1", "get_weather"), ("call_c1", "calculate")]
                results = history[2]["parts"]
                assert [(x["callId"], x["output"]) for x in results] == [
                    ("call_w1", "The weather in Paris is sunny and 72F"), ("call_c1", "42")]
                # the second request carried the calls and their results, paired by id
                second = server.requests[1].json["messages"]
                tool_msgs = [m for m in second if m["role"] == "tool"]
                assert [(m["tool_call_id"], m["content"]) for m in tool_msgs] == [
                    ("call_w1", "The weather in Paris is sunny and 72F"), ("call_c1", "42")]
                notes = [m for m, _ in await _drain(c)]
                assert notes.count("chat/toolCall") == 2 and notes.count("chat/toolResult") == 2
                assert result["usage"]["inputTokens"] == 44 + 12  # both rounds are counted
                await c.close()
            finally:
                d.stop()

    asyncio.run(main())


def test_client_tool_owner_disconnects_mid_call(tmp_path):
    async def main():
        handler = _rounds("The tool failed, sorry.", [[("call_1", "current_selection", {})]])
        async with FakeServer(handler) as server:
            d = await _daemon_with(tmp_path, server)
            try:
                editor = await AsyncClient.connect(d.socket)
                script = await AsyncClient.connect(d.socket)
                called = asyncio.Event()

                async def never_answers(params):
                    called.set()
                    await asyncio.Event().wait()

                editor.request_handlers["tool/invoke"] = never_answers
                await editor.request("tools/register", {"tools": [{"name": "current_selection"}]})
                send = asyncio.ensure_future(script.request("chat/send", {
                    "conversation": "sel", "text": "explain my selection", "models": ["gpt-4o-mini"],
                    "tools": ["current_selection"]}))
                await asyncio.wait_for(called.wait(), 10)
                await editor.close()  # the editor goes away mid-call
                result = await asyncio.wait_for(send, 10)
                history = (await script.request("conversation/get", {"name": "sel"}))["messages"]
                tool_result = history[2]["parts"][0]
                assert tool_result["isError"] and "disconnected" in tool_result["output"]
                assert result["message"]["text"] == "The tool failed, sorry."
                # the tool is withdrawn: a new turn that names it gets a clear error
                with pytest.raises(Exception, match="no tool named 'current_selection'"):
                    await script.request("chat/send", {"conversation": "sel", "text": "again",
                                                       "models": ["gpt-4o-mini"], "tools": ["current_selection"]})
                # and history is valid for the next turn: the provider gets matching call/result pairs
                await script.request("chat/send", {"conversation": "sel", "text": "thanks",
                                                   "models": ["gpt-4o-mini"]})
                last = server.requests[-1].json["messages"]
                call_ids = [tc["id"] for m in last if m["role"] == "assistant" for tc in m.get("tool_calls") or []]
                answered = [m["tool_call_id"] for m in last if m["role"] == "tool"]
                assert call_ids == answered == ["call_1"]
                await script.close()
            finally:
                d.stop()

    asyncio.run(main())


def test_max_rounds_answers_every_call_and_says_why(tmp_path):
    async def main():
        loop_forever = [[("call_%d" % i, "calculate", {"expression": "1+1"})] for i in range(10)]
        async with FakeServer(_rounds("never reached", loop_forever)) as server:
            d = await _daemon_with(tmp_path, server)
            try:
                c = await AsyncClient.connect(d.socket)
                result = await c.request("chat/send", {"conversation": "loop", "text": "go",
                                                       "models": ["gpt-4o-mini"], "tools": ["calculate"],
                                                       "maxRounds": 3})
                assert result["finishReason"] == "max_rounds"
                history = (await c.request("conversation/get", {"name": "loop"}))["messages"]
                assert [m["role"] for m in history] == ["user"] + ["assistant", "tool"] * 3
                assert history[-1]["parts"][0]["isError"]
                assert "maxRounds (3)" in history[-1]["parts"][0]["output"]
                assert [x["output"] for m in history[2:-1:2] for x in m["parts"]] == ["2", "2"]  # builtin ran
                assert len(server.requests) == 3
                await c.close()
            finally:
                d.stop()

    asyncio.run(main())


def test_approval_first_answer_wins_no_client_means_deny_and_deny_patterns_hold(tmp_path):
    async def main():
        handler = _rounds("done", [[("call_n", "write_note", {"text": "hi"})]])
        async with FakeServer(handler) as server:
            d = await _daemon_with(tmp_path, server)
            try:
                owner = await AsyncClient.connect(d.socket)
                owner.request_handlers["tool/invoke"] = lambda prm: _const(f"noted {prm['arguments']['text']}")
                await owner.request("tools/register", {"tools": [{
                    "name": "write_note", "sideEffects": True,
                    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}]})
                send = {"text": "note it", "models": ["gpt-4o-mini"], "tools": ["write_note"]}

                # 1. nobody attached can approve: denied, and the model is told
                r = await owner.request("chat/send", {"conversation": "a1", **send})
                parts = (await owner.request("conversation/get", {"name": "a1"}))["messages"][2]["parts"]
                assert parts[0]["isError"] and "no client attached" in parts[0]["output"]
                assert r["message"]["text"] == "done"

                # 2. two approving clients attached: the first answer wins, the other is withdrawn
                fast = await AsyncClient.connect(d.socket)
                slow = await AsyncClient.connect(d.socket)
                withdrawn = asyncio.Event()
                for cl, name in ((fast, "fast"), (slow, "slow")):
                    await cl.request("initialize", {"clientInfo": {"name": name},
                                                    "capabilities": {"toolApproval": True}})
                    await owner.request("conversation/create", {"name": "a2"}) if name == "fast" else None
                    await cl.request("conversation/subscribe", {"name": "a2"})
                fast.request_handlers["tool/approve"] = lambda prm: _const({"approved": True})
                slow_asked = asyncio.Event()

                async def slow_answer(prm):
                    slow_asked.set()
                    await withdrawn.wait()
                    return {"approved": False}

                slow.request_handlers["tool/approve"] = slow_answer
                slow.on_notification = lambda m, prm: withdrawn.set() if m == "$/cancelRequest" else None
                await owner.request("chat/send", {"conversation": "a2", **send})
                await asyncio.wait_for(withdrawn.wait(), 10)
                parts = (await owner.request("conversation/get", {"name": "a2"}))["messages"][2]["parts"]
                assert parts[0] == {"type": "toolResult", "callId": "call_n", "name": "write_note",
                                    "output": "noted hi"}

                # 3. a deny pattern in the conversation's policy holds even with approvers attached
                await owner.request("conversation/update", {"name": "a2", "params": {"toolPolicy": [
                    {"tool": "write_*", "arguments": "hi", "action": "deny"}]}})
                await owner.request("chat/send", {"conversation": "a2", **send})
                parts = (await owner.request("conversation/get", {"name": "a2"}))["messages"][-2]["parts"]
                assert parts[0]["isError"] and parts[0]["output"] == "not run: denied by policy"
                for cl in (owner, fast, slow):
                    await cl.close()
            finally:
                d.stop()

    asyncio.run(main())


async def _const(value):
    return value


def test_cancel_during_a_tool_call_commits_nothing(tmp_path):
    async def main():
        handler = _rounds("unused", [[("call_s", "slow_tool", {})]])
        async with FakeServer(handler) as server:
            d = await _daemon_with(tmp_path, server)
            try:
                c = await AsyncClient.connect(d.socket)
                started = asyncio.Event()

                async def slow(params):
                    started.set()
                    await asyncio.Event().wait()

                c.request_handlers["tool/invoke"] = slow
                await c.request("tools/register", {"tools": [{"name": "slow_tool"}]})
                msg_id, reply = c.start_request("chat/send", {"conversation": "cx", "text": "go",
                                                              "models": ["gpt-4o-mini"], "tools": ["slow_tool"]})
                await asyncio.wait_for(started.wait(), 10)
                assert (await c.request("chat/cancel", {"conversation": "cx"})) == {"cancelled": True}
                assert (await asyncio.wait_for(reply, 10))["error"]["code"] == p.REQUEST_CANCELLED
                got = await c.request("conversation/get", {"name": "cx"})
                assert got["messages"] == []
                await c.close()
            finally:
                d.stop()

    asyncio.run(main())
