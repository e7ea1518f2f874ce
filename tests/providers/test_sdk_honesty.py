"""The fakes are honest: the official `openai` SDK, pointed at the same fake server, parses what it
replays; and for the same conversation chatd's request body matches the SDK's in every field that matters."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")

from chatd import protocol as p  # noqa: E402
from chatd.providers.openai_chat import OpenAIChatProvider  # noqa: E402
from chatd.providers.openai_responses import OpenAIResponsesProvider  # noqa: E402
from fakes import FakeServer, Reply, fixture_events, fixture_json  # noqa: E402
from provider_helpers import WEATHER, client, collect, msg, request, run  # noqa: E402
from scripted_openai import text_stream  # noqa: E402
from test_openai_responses import TOOL_STREAM  # noqa: E402

KEY = "sk-test-honesty-0123456789"
TOOLS_SDK = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER.parameters}}]


def sdk(url: str):
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)


def test_sdk_parses_the_fake_text_stream_and_sends_the_same_body():
    async def main():
        async with FakeServer(Reply(chunks=fixture_events("openai_chat_text_stream.txt"))) as srv:
            async with sdk(srv.url) as c:
                stream = await c.chat.completions.create(
                    model="gpt-4o", stream=True, stream_options={"include_usage": True},
                    messages=[{"role": "developer", "content": "You are a helpful assistant."},
                              {"role": "user", "content": "Hello!"}])
                chunks = [c async for c in stream]
            async with client() as http:
                await collect(OpenAIChatProvider(http, base_url=srv.url + "/v1", api_key=KEY),
                              request("gpt-4o", msg("user", "Hello!"), system="You are a helpful assistant."))
            return chunks, srv.requests
    chunks, (theirs, ours) = run(main())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("I'm unable") and chunks[-1].usage.prompt_tokens == 14
    assert ours.json == theirs.json
    assert ours.path == theirs.path
    for header in ("authorization", "content-type"):
        assert ours.headers[header] == theirs.headers[header]


def test_sdk_parses_the_fake_tool_stream_and_the_round_trip_body_matches():
    conversation = [
        {"role": "user", "content": "what's the weather in NYC?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_4XzlGBLtUe9dy3GVNV4jhq7h", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"New York City\"}"}}]},
        {"role": "tool", "tool_call_id": "call_4XzlGBLtUe9dy3GVNV4jhq7h", "content": "72F and sunny"},
    ]

    async def main():
        async with FakeServer(Reply(chunks=fixture_events("openai_chat_toolcall_stream.txt"))) as srv:
            async with sdk(srv.url) as c:
                stream = await c.chat.completions.create(
                    model="gpt-4o", messages=conversation, tools=TOOLS_SDK, stream=True, max_completion_tokens=100,
                    temperature=0.5, stream_options={"include_usage": True})
                chunks = [c async for c in stream]
            async with client() as http:
                req = request("gpt-4o",
                              msg("user", "what's the weather in NYC?"),
                              msg("assistant", p.ToolCallPart(id="call_4XzlGBLtUe9dy3GVNV4jhq7h", name="get_weather",
                                                              arguments={"city": "New York City"})),
                              msg("tool", p.ToolResultPart(call_id="call_4XzlGBLtUe9dy3GVNV4jhq7h",
                                                           name="get_weather", output="72F and sunny")),
                              tools=[WEATHER], maxNewTokens=100, temperature=0.5)
                await collect(OpenAIChatProvider(http, base_url=srv.url + "/v1", api_key=KEY), req)
            return chunks, srv.requests
    chunks, (theirs, ours) = run(main())
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in (c.choices[0].delta.tool_calls or ()))
    assert json.loads(args) == {"city": "New York City"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert ours.json == theirs.json


def test_sdk_parses_the_fake_responses_streams():
    async def main():
        async with FakeServer([Reply(chunks=fixture_events("openai_responses_text_stream.txt")),
                               Reply(chunks=TOOL_STREAM)]) as srv:
            async with sdk(srv.url) as c:
                text = [e async for e in await c.responses.create(
                    model="gpt-5", input="Hello!", stream=True, instructions="You are a helpful assistant.")]
                tool = [e async for e in await c.responses.create(
                    model="gpt-5", input="weather in NYC?", stream=True,
                    tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER.parameters,
                            "strict": False}])]
            async with client() as http:
                prov = OpenAIResponsesProvider(http, base_url=srv.url + "/v1", api_key=KEY)
                srv.handler = Reply(chunks=fixture_events("openai_responses_text_stream.txt"))
                await collect(prov, request("gpt-5", msg("user", "Hello!"), system="You are a helpful assistant."))
            return text, tool, srv.requests
    text, tool, reqs = run(main())
    assert text[-1].type == "response.completed" and text[-1].response.output_text == "Hi there! How can I assist you today?"
    done = [e for e in tool if e.type == "response.output_item.done"][-1]
    assert [e for e in tool if e.type == "response.output_item.done"][0].item.type == "reasoning"
    assert done.item.type == "function_call" and json.loads(done.item.arguments) == {"city": "New York City"}
    theirs, ours = reqs[0].json, reqs[2].json
    for field in ("model", "instructions", "stream"):
        assert ours[field] == theirs[field]
    assert ours["input"] == [{"role": "user", "content": "Hello!"}]  # the SDK's string input, as a message item


def test_sdk_parses_the_non_streamed_replies_and_sends_the_same_non_streamed_body():
    """chat/batch's path: the SDK's plain `create()` (no stream) sends what `complete()` sends, and parses
    both the recorded non-streamed reply and the scripted fakes' `whole` form."""
    recorded = Reply(chunks=[fixture_json("openai_chat_toolcall_nonstream_response.txt")],
                     headers={"content-type": "application/json"})
    scripted = text_stream("hello from the whole reply", prompt_tokens=3, completion_tokens=5)

    async def main():
        async with FakeServer([recorded, scripted, recorded]) as srv:
            async with sdk(srv.url) as c:
                tool = await c.chat.completions.create(model="gpt-4o", messages=[
                    {"role": "user", "content": "weather in Boston?"}], tools=TOOLS_SDK, max_completion_tokens=50)
                text = await c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            async with client() as http:
                await OpenAIChatProvider(http, base_url=srv.url + "/v1", api_key=KEY).complete(
                    request("gpt-4o", msg("user", "weather in Boston?"), tools=[WEATHER], maxNewTokens=50))
            return tool, text, srv.requests
    tool, text, (theirs, _, ours) = run(main())
    call = tool.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_abc123", "get_current_weather", {"location": "Boston, MA"})
    assert tool.choices[0].finish_reason == "tool_calls" and tool.usage.prompt_tokens == 82
    assert text.choices[0].message.content == "hello from the whole reply" and text.usage.completion_tokens == 5
    assert ours.json == theirs.json and "stream" not in ours.json
