"""The Anthropic Messages adapter against a fake server replaying the recorded wire fixtures, with the
official `anthropic` SDK pointed at the same fake to prove the fake (and chatd's request) honest."""

from __future__ import annotations

import json

import anthropic
import pytest

from ag_fakes import Reply, json_fixtures, split_every, sse_fixture
from ag_run import CANARY, msg, request, run, user
from chatd import protocol as p
from chatd.providers.anthropic import AnthropicProvider, build_request
from chatd.providers.base import (
    Finish, ModelSpec, TextDelta, ThinkingEvent, ToolCallEvent, ToolSpec, UsageEvent, cost_of,
)

SPEC = ModelSpec(name="claude-test", provider="anthropic", api_model="claude-3-opus-latest", max_output=1024,
                 input_price=3.0, output_price=15.0, cached_input_price=0.3)
TEXT = sse_fixture("anthropic_messages_text_stream.txt")
TOOL = sse_fixture("anthropic_messages_tool_stream.txt")
WEATHER = ToolSpec(name="get_weather", description="Get the weather for a specific location",
                   parameters={"type": "object", "properties": {"location": {"type": "string"}}})


def sse(*events: dict) -> bytes:
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


def sdk(fake) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=CANARY, base_url=fake.url, max_retries=0)


def texts(events) -> str:
    return "".join(e.text for e in events if type(e) is TextDelta)


# ---------------------------------------------------------------- streaming
@pytest.mark.parametrize("split", [None, 7])
def test_text_stream(fake, split):
    fake.script(Reply(pieces=split_every(TEXT, split)) if split else Reply.sse(TEXT))
    events, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "Say hello there!")]))
    assert err is None
    assert texts(events) == "Hello there!"
    assert events[-2:] == [UsageEvent(p.Usage(input_tokens=11, output_tokens=6)), Finish("stop")]
    seen = fake.seen[0]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == CANARY and seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.body == {"model": "claude-3-opus-latest", "max_tokens": 1024,
                         "messages": [{"role": "user", "content": "Say hello there!"}], "stream": True}


def test_sdk_parses_the_fake_and_sends_the_same_request(fake):
    conv = [user(1, "Say hello there!")]
    fake.script(Reply.sse(TEXT))
    run(AnthropicProvider, fake.url, request(SPEC, conv, system="Be brief.", temperature=0.5, topP=0.9,
                                             stop=["END"], maxNewTokens=200))
    # This SDK no longer offers temperature/top_p (newer models reject them): older models still take them.
    with sdk(fake).messages.stream(model="claude-3-opus-latest", max_tokens=200, system="Be brief.",
                                   extra_body={"temperature": 0.5, "top_p": 0.9}, stop_sequences=["END"],
                                   messages=[{"role": "user", "content": "Say hello there!"}]) as s:
        final = s.get_final_message()
    assert final.content[0].text == "Hello there!" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 6
    ours, theirs = fake.seen[0], fake.seen[1]
    assert ours.body == theirs.body
    assert ours.path == theirs.path.split("?")[0]
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    # SDK 2.x sends the key as a bearer token with a newer pinned version; chatd keeps the documented
    # x-api-key + anthropic-version 2023-06-01 pair (a different version can be set via extra_headers).
    sdk_key = theirs.headers.get("x-api-key") or theirs.headers["authorization"].removeprefix("Bearer ")
    assert ours.headers["x-api-key"] == sdk_key == CANARY
    assert ours.headers["anthropic-version"] == "2023-06-01" and theirs.headers["anthropic-version"]


def test_newer_models_get_no_sampling_and_adaptive_thinking(fake):
    modern = ModelSpec(name="sonnet-5", provider="anthropic", api_model="claude-sonnet-5", max_output=8192)
    fake.script(Reply.sse(TEXT))
    run(AnthropicProvider, fake.url, request(modern, [user(1, "hi")], temperature=0.2, topP=0.5,
                                             reasoningEffort="high", jsonSchema={"name": "x", "schema": {
                                                 "type": "object", "properties": {}}}))
    sdk(fake).messages.create(model="claude-sonnet-5", max_tokens=8192, thinking={"type": "adaptive"},
                              output_config={"effort": "high", "format": {"type": "json_schema", "schema": {
                                  "type": "object", "properties": {}}}},
                              messages=[{"role": "user", "content": "hi"}], stream=True).close()
    assert fake.seen[0].body == fake.seen[1].body
    # a model option overrides the guess from the model id
    forced = ModelSpec(name="x", provider="anthropic", api_model="claude-sonnet-5", options={"sampling": True})
    assert build_request(request(forced, [user(1, "hi")], temperature=0.2))["temperature"] == 0.2


# ---------------------------------------------------------------- tools
def test_tool_call_round_trip_matches_the_sdk(fake):
    fake.script(Reply.sse(TOOL))
    conv = [user(1, "What is the weather in SF?")]
    events, err = run(AnthropicProvider, fake.url, request(SPEC, conv, tools=[WEATHER]))
    assert err is None
    assert texts(events) == "I'll check the current weather in Paris for you."
    call = next(e for e in events if type(e) is ToolCallEvent)
    assert call == ToolCallEvent(id="toolu_01NRLabsLyVHZPKxbKvkfSMn", name="get_weather",
                                 arguments={"location": "Paris"})
    assert events[-1] == Finish("tool_calls")
    assert fake.seen[0].body["tools"] == [{"name": WEATHER.name, "description": WEATHER.description,
                                           "input_schema": WEATHER.parameters}]

    # The SDK parses the same stream into the same call.
    with sdk(fake).messages.stream(model=SPEC.api_model, max_tokens=1024, tools=[
            {"name": WEATHER.name, "description": WEATHER.description, "input_schema": WEATHER.parameters}],
            messages=[{"role": "user", "content": "What is the weather in SF?"}]) as s:
        final = s.get_final_message()
    block = final.content[1]
    assert (block.id, block.name, block.input) == (call.id, call.name, call.arguments)

    # Turn 2: the call and its result go back as tool_use / tool_result, exactly as the SDK would send them.
    conv += [msg(2, "assistant", p.TextPart(texts(events)), p.ToolCallPart(call.id, call.name, call.arguments)),
             msg(3, "tool", p.ToolResultPart(call.id, call.name, "The weather is 73f"))]
    fake.script(Reply.sse(TEXT))
    run(AnthropicProvider, fake.url, request(SPEC, conv, tools=[WEATHER]))
    sdk(fake).messages.create(model=SPEC.api_model, max_tokens=1024, stream=True, tools=[
        {"name": WEATHER.name, "description": WEATHER.description, "input_schema": WEATHER.parameters}],
        messages=[{"role": "user", "content": "What is the weather in SF?"},
                  {"role": "assistant", "content": [b.model_dump(exclude={"caller"}, exclude_none=True)
                                                    for b in final.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "The weather is 73f"}]}]).close()
    assert fake.seen[0].body == fake.seen[1].body


def test_usage_and_cost():
    from chatd.providers.anthropic import AnthropicStreamParser
    parser = AnthropicStreamParser()
    stream = sse({"type": "message_start", "message": {"usage": {
        "input_tokens": 100, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 50,
        "output_tokens": 1}}},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 200}},
        {"type": "message_stop"})
    events = [e for chunk in stream.split(b"\n\n") if chunk
              for e in parser.feed(None, chunk.split(b"data: ")[1].decode())]
    usage = events[0].usage
    assert usage == p.Usage(input_tokens=1150, output_tokens=200, cached_tokens=1000)
    assert events[1] == Finish("length")
    assert cost_of(SPEC, usage) == pytest.approx((150 * 3.0 + 1000 * 0.3 + 200 * 15.0) / 1e6)
    assert cost_of(SPEC, p.Usage(input_tokens=377, output_tokens=65)) == pytest.approx((377 * 3 + 65 * 15) / 1e6)


def test_thinking_kept_for_anthropic_only(fake):
    stream = sse(
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                                              "model": "claude", "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "",
                                                                      "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBsig=="}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "42"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"})
    fake.script(Reply.sse(stream))
    events, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "q")], reasoningEffort="low",
                                                           maxNewTokens=4000, temperature=0.3))
    assert err is None
    assert events[0] == ThinkingEvent(text="Let me think.", signature="EqQBsig==")
    assert fake.seen[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "temperature" not in fake.seen[0].body  # Anthropic refuses a changed temperature with thinking
    with sdk(fake).messages.stream(model="c", max_tokens=10, messages=[{"role": "user", "content": "q"}]) as s:
        final = s.get_final_message()  # the SDK reads the same shapes
    assert (final.content[0].thinking, final.content[0].signature) == ("Let me think.", "EqQBsig==")

    conv = [user(1, "q"), msg(2, "assistant", p.ThinkingPart("Let me think.", "EqQBsig==", "anthropic"),
                              p.ThinkingPart("gemini thought", "gsig", "gemini"), p.ThinkingPart("unsigned"),
                              p.TextPart("42")), user(3, "again")]
    body = build_request(request(SPEC, conv))
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBsig=="}, {"type": "text", "text": "42"}]


# ---------------------------------------------------------------- transcripts from other providers
def test_transcript_from_other_providers_is_valid():
    conv = [
        user(1, "weather in Paris and Rome?"),
        msg(2, "assistant", p.ThinkingPart("openai reasoning", None, "openai"),
            p.ToolCallPart("call_Ab3dEf9GhIjK", "get_weather", {"location": "Paris"}),
            p.ToolCallPart("call:weird/id.1", "get_weather", {"location": "Rome"})),
        msg(3, "tool", p.ToolResultPart("call_Ab3dEf9GhIjK", "get_weather", {"temp": 20})),
        msg(4, "tool", p.ToolResultPart("call:weird/id.1", "get_weather", "boom", is_error=True)),
        msg(5, "assistant", p.ThinkingPart("", "gsig", "gemini"), p.TextPart("Paris 20, Rome unknown.")),
        msg(6, "assistant", p.TextPart("")),  # an empty reply is dropped, not sent as an empty block
        user(7, "thanks"),
    ]
    body = build_request(request(SPEC, conv, system="sys"))
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    uses = [b for b in messages[1]["content"] if b["type"] == "tool_use"]
    results = messages[2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result"]  # both results in one message
    assert [r["tool_use_id"] for r in results] == [u["id"] for u in uses]
    assert uses[0]["id"] == "call_Ab3dEf9GhIjK"
    assert uses[1]["id"].startswith("toolu_") and all(c.isalnum() or c in "_-" for c in uses[1]["id"])
    assert results[0]["content"] == '{"temp":20}' and results[1]["is_error"] is True
    assert messages[3]["content"] == "Paris 20, Rome unknown."  # gemini thinking dropped
    assert all(b.get("type") != "thinking" for m in messages if isinstance(m["content"], list)
               for b in m["content"])
    assert body["system"] == "sys"


# ---------------------------------------------------------------- errors
ERROR_BODY = json_fixtures("anthropic_errors_and_headers.txt")[0]


@pytest.mark.parametrize("status,kind,headers,retry_after", [
    (400, "bad_request", {}, None),
    (401, "auth", {}, None),
    (429, "rate_limit", {"retry-after": "7"}, 7.0),
    (500, "server", {}, None),
    (529, "overloaded", {}, None),
])
def test_error_bodies(fake, status, kind, headers, retry_after):
    body = dict(ERROR_BODY, error={"type": "x_error", "message": f"bad thing for key {CANARY}"})
    fake.script(Reply.json(status, body, headers))
    events, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert events == [] and err is not None
    assert (err.kind, err.status, err.retry_after) == (kind, status, retry_after)
    assert "bad thing for key" in str(err) and "x_error" in str(err)
    assert CANARY not in str(err) and CANARY not in repr(err.args)


def test_sdk_sees_the_same_529(fake):
    fake.script(Reply.json(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk(fake).messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 529
    _, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert err.kind == "overloaded" and "Overloaded" in err.message


def test_context_length_error_is_classified(fake):
    fake.script(Reply.json(400, {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}))
    _, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert err.kind == "context_length"


def test_error_event_mid_stream(fake):
    error = b"".join(x + b"\n" for x in json_fixture_lines("anthropic_errors_and_headers.txt")) + b"\n"
    partial = TEXT.split(b"event: content_block_stop")[0]  # text deltas sent, then the error event
    fake.script(Reply(pieces=[partial, error]))
    events, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert texts(events) == "Hello there!"
    assert err.kind == "overloaded" and err.status is None and "Overloaded" in err.message
    with pytest.raises(anthropic.APIStatusError):  # the SDK also stops at the same bytes
        with sdk(fake).messages.stream(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s:
            s.get_final_message()


def json_fixture_lines(name: str) -> list[bytes]:
    """The in-stream error event as recorded (its `event:` and `data:` lines)."""
    from ag_fakes import WIRE
    lines = (WIRE / name).read_bytes().splitlines()
    return [ln for ln in lines if ln.startswith((b"event: error", b"data: {\"type\": \"error\""))]


@pytest.mark.parametrize("bad", [
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_del\n\n',
    b'event: content_block_delta\ndata: [1, 2]\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0}\n\n',
])
def test_malformed_chunk(fake, bad):
    head = TEXT.split(b"event: content_block_stop")[0]
    fake.script(Reply(pieces=[head, bad]))
    events, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert texts(events) == "Hello there!"
    assert err.kind == "stream"


def test_stream_cut_short_dropped_stalled_and_refused(fake):
    head = TEXT.split(b"event: message_delta")[0]
    fake.script(Reply(pieces=[head]))  # a clean end without message_stop
    _, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert err.kind == "stream" and "message_stop" in err.message
    fake.script(Reply(pieces=[head], drop=True))  # the socket closes mid-body: the stream broke
    _, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert err.kind == "stream"
    fake.script(Reply(pieces=[head], stall=True))  # the server stops talking
    _, err = run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]), timeout=0.3)
    assert err.kind == "timeout"
    _, err = run(AnthropicProvider, "http://127.0.0.1:9", request(SPEC, [user(1, "hi")]))
    assert err.kind == "connection" and CANARY not in str(err)


def test_no_key_sends_no_header_and_extra_headers_pass(fake):
    fake.script(Reply.sse(TEXT))
    run(AnthropicProvider, fake.url, request(SPEC, [user(1, "hi")]), key=None,
        extra_headers={"anthropic-beta": "x"})
    assert "x-api-key" not in fake.seen[0].headers and fake.seen[0].headers["anthropic-beta"] == "x"
