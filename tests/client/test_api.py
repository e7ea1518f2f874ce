"""The seed-compatible API's shapes and behaviour against a real daemon: messages and conversations,
tools with the daemon's own schemas, bound (shared) conversations, local ones through stateless batches
or stateless turns that store nothing, errors as values, usage and cost, the sync API anywhere."""

from __future__ import annotations

import asyncio
import enum
import os
import subprocess
import sys

import pytest

from chatd.toolschema import schema_for
from chatd_client import (APIResponse, Client, Conversation, LLMClient, Message, Text, Tool, ToolCall,
                          ToolResult)
from client_fakes import start_daemon, text_stream, tool_call_stream

NOTICE = "[echo: the offline model; set an API key to use a real one]"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, providers):
    """The daemon every LLMClient in this module finds (through CHATD_HOME, as a script would)."""
    d = start_daemon(tmp_path_factory.mktemp("api"), providers.env())
    saved = os.environ.get("CHATD_HOME")
    os.environ["CHATD_HOME"] = d.home
    yield d
    if saved is None:
        del os.environ["CHATD_HOME"]
    else:
        os.environ["CHATD_HOME"] = saved
    d.stop()


def _names(daemon) -> list[str]:
    with Client(daemon.socket) as c:
        return [x["name"] for x in c.request("conversation/list", {"limit": 1000})["conversations"]]


def _stored(daemon) -> list[str]:
    """Conversations in the daemon's store: a local Conversation must leave none behind."""
    return _names(daemon)


# ---------------------------------------------------------------- shapes (no daemon)
def test_message_and_conversation_shapes(daemon):
    conv = Conversation().system("Be brief.")
    assert conv.user("hi") is conv and [m.role for m in conv.messages] == ["system", "user"]
    fresh = Conversation.system("Sys")  # on the class: a new conversation
    assert isinstance(fresh, Conversation) and fresh.messages == [Message.system("Sys")]
    assert Message.ai("x").role == "assistant" and Message.user("u").completion == "u"
    call = Message("assistant", [ToolCall(id="c1", name="f", arguments={"a": 1})])
    result = Message("tool", [ToolResult(call_id="c1", name="f", output="ok")])
    assert call.completion is None and result.completion is None  # "[No text]" in the seed's history view
    response = APIResponse(content=Message.ai("hello"), model_internal="gpt-4.1")
    assert conv.with_response(response) is conv and conv.model_used == "gpt-4.1"
    assert conv.messages[-1].completion == "hello" and conv.messages.pop().role == "assistant"
    wire = {"seq": 3, "role": "assistant", "text": "t", "parts": [{"type": "text", "text": "t"}], "model": "echo"}
    m = Message.from_wire(wire)
    assert (m.seq, m.model, m.parts) == (3, "echo", [Text("t")])
    failed = APIResponse.failed("every model failed", -32004, [{"model": "a", "outcome": "error"}])
    assert failed.is_error and failed.completion is None and failed.model_internal == "a"
    with pytest.raises(ValueError):
        Conversation(name=" bad ")


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def forecast(city: str, days: int = 1, unit: Unit = Unit.C) -> str:
    """Forecast the weather.

    Args:
        city: Where.
        days: How many days ahead.
    """
    return f"{city} {days} {unit.value}"


def test_tool_from_function_has_the_daemons_schema_and_converts_arguments():
    tool = Tool.from_function(forecast)
    name, description, schema = schema_for(forecast)
    assert (tool.name, tool.description, tool.parameters) == (name, description, schema)
    assert tool.declaration()["parameters"]["properties"]["city"]["description"] == "Where."
    assert tool.call(city="Oslo", days=2, unit="fahrenheit") == "Oslo 2 fahrenheit"  # JSON in, enum out
    with pytest.raises(Exception, match="days"):
        tool.call(city="Oslo", days="two")


# ---------------------------------------------------------------- local conversations
def test_prompts_and_conversations_go_stateless_in_one_batch(daemon):
    client = LLMClient("echo")
    conv = Conversation.system("S").user("first").add(Message.ai("ok")).user("second")
    responses = client.process_prompts_sync(["a", conv, "c"])
    assert [r.completion for r in responses] == [f"{NOTICE} You said: {x}" for x in ("a", "second", "c")]
    assert all(r.model_internal == "echo" and r.usage.output_tokens > 0 and not r.is_error for r in responses)
    assert len(conv.messages) == 4 and _names(daemon) == []  # the script keeps the history; nothing stored
    client.close()


def test_usage_cost_and_max_new_tokens_reach_the_provider(daemon, providers):
    providers.openai = lambda req: text_stream("fine", prompt_tokens=1000, completion_tokens=100)
    before = len(providers.requests)
    response = LLMClient("gpt-4o-mini", max_new_tokens=500).process_prompts_sync(["hi"])[0]
    assert providers.requests[before].json["max_completion_tokens"] == 500
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1000, 100)
    assert response.cost == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)
    assert response.finish_reason == "stop" and response.completion == "fine"


def test_a_local_conversation_sends_its_history_statelessly(daemon, providers):
    """Without chat/batch (or with tool history) a local turn is a stateless chat/send carrying the
    script's transcript, edits included; nothing is stored in the daemon."""
    providers.openai = lambda req: text_stream(f"heard {len(req.json['messages'])} messages")
    client = LLMClient("gpt-4o-mini")
    client.use_batch = False
    conv = Conversation.system("Be brief.").user("one")
    r1 = client.process_prompts_sync([conv])
    conv.add(Message.ai(r1[0].completion)).user("two")
    r2 = client.process_prompts_sync([conv])
    assert r2[0].completion == "heard 4 messages"  # system, one, the reply, two
    sent = providers.requests[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("developer", "Be brief."), ("user", "one"), ("assistant", "heard 2 messages"), ("user", "two")]
    conv.messages[2] = Message.ai("something else")  # the script rewrites history: the next call sends it
    client.process_prompts_sync([conv])
    assert providers.requests[-1].json["messages"][2]["content"] == "something else"
    client.close()
    assert _stored(daemon) == []


def test_agent_loop_runs_sync_and_async_tools_here(daemon, providers):
    calls = []

    async def lookup(key: str) -> dict:
        """Look a key up."""
        calls.append(("lookup", key))
        return {"key": key, "value": 42}

    def shout(text: str) -> str:
        calls.append(("shout", text))
        return text.upper()

    def reply(req):
        tool_msgs = [m for m in req.json["messages"] if m["role"] == "tool"]
        if not tool_msgs:
            return tool_call_stream([("c1", "lookup", {"key": "k"}), ("c2", "shout", {"text": "hey"})])
        return text_stream(" | ".join(m["content"] for m in tool_msgs))

    providers.openai = reply

    async def main():
        client = LLMClient("gpt-4o-mini")
        conv, response = await client.run_agent_loop(Conversation().user("go"), tools=[lookup, shout], max_rounds=3)
        await client.aclose()
        return conv, response

    conv, response = asyncio.run(main())
    assert sorted(calls) == [("lookup", "k"), ("shout", "hey")]
    assert response.completion == '{"key":"k","value":42} | HEY'
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    assert conv.model_used == "gpt-4o-mini" and conv.messages[1].tool_calls[0].name == "lookup"
    assert _stored(daemon) == []
    # the tool history goes back with the next turn, paired call by call
    providers.openai = lambda req: text_stream("again")
    conv.user("and again")
    client = LLMClient("gpt-4o-mini")
    asyncio.run(client.run_agent_loop(conv, tools=[lookup, shout], max_rounds=3))
    sent = providers.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "assistant", "user"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ["c1", "c2"]
    client.close()


# ---------------------------------------------------------------- bound conversations
def test_a_bound_conversation_is_shared_with_other_clients(daemon):
    client = LLMClient("echo")
    conv = Conversation.load("notes", socket=daemon.socket).system("Be brief.").user("from the script")
    first = client.start_sync(conv)
    assert first.conversation == "notes" and first.completion == f"{NOTICE} You said: from the script"
    conv.with_response(first)
    with Client(daemon.socket) as editor:  # another client continues the same conversation
        got = editor.request("conversation/get", {"name": "notes"})
        assert got["conversation"]["system"] == "Be brief."
        assert [m["text"] for m in got["messages"]][0] == "from the script"
        editor.request("chat/send", {"conversation": "notes", "text": "from the editor"})
    conv.user("and the script again")
    client.start_sync(conv)
    assert [(m.role, m.completion) for m in conv.messages][:5] == [
        ("system", "Be brief."), ("user", "from the script"), ("assistant", first.completion),
        ("user", "from the editor"), ("assistant", f"{NOTICE} You said: from the editor")]
    assert conv.messages[-1].completion == "and the script again" and conv.messages[-1].seq == 5
    loaded = Conversation.load("notes", socket=daemon.socket)  # a later script sees all of it
    assert len(loaded.messages) == 7 and loaded.model_used == "echo"
    client.close()


# ---------------------------------------------------------------- errors and the sync API
def test_failures_are_values_not_exceptions(daemon, tmp_path):
    unknown = LLMClient("no-such-model").process_prompts_sync(["hi"])[0]
    assert unknown.is_error and "no-such-model" in unknown.error_message
    failing = LLMClient("echo", params={"echoFailAfter": 1})
    conv = Conversation().user("hi")
    failed = failing.start_sync(conv)
    assert failed.is_error and failed.completion is None and "every model failed" in failed.error_message
    assert failed.attempts and failed.attempts[0]["model"] == "echo" and failed.model_internal == "echo"
    failing.use_batch = False
    again = failing.start_sync(conv)  # the same through chat/send: the turn fails, nothing is committed
    assert again.is_error and again.error_code == -32004
    failing.close()
    gone = LLMClient("echo", socket=str(tmp_path / "nobody.sock")).process_prompts_sync(["hi"])[0]
    assert gone.is_error and gone.error_message.startswith("chatd is not reachable")
    not_user = LLMClient("echo").start_sync(Conversation().system("s"))
    assert not_user.is_error and "end with a user message" in not_user.error_message


def test_the_sync_api_works_inside_a_running_event_loop(daemon):
    client = LLMClient("echo")

    async def notebook_cell():
        return client.process_prompts_sync(["inside a loop"])[0].completion

    assert asyncio.run(notebook_cell()) == f"{NOTICE} You said: inside a loop"
    client.close()


def test_importing_the_client_stays_light(daemon):
    code = ("import sys, chatd_client\n"
            "light = not any(m in sys.modules for m in ('chatd_client.llm', 'chatd_client.tool', 'chatd.toolschema'))\n"
            "from chatd_client import LLMClient, Conversation, Message, Tool\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'pygls', 'lsprotocol', 'cattrs',"
            " 'aiohttp') or m.startswith(('chatd.server', 'chatd.providers', 'chatd.store', 'chatd.tools.')))\n"
            "print(light, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True []"
