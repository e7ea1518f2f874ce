"""OpenAI Chat Completions: request building, transcript conversion, and streams from a fake server
replaying the recorded fixtures (text, tool calls, usage, errors, failures)."""

from __future__ import annotations

import gc
import gzip
import sys

import httpx
import pytest

from chatd import protocol as p
from chatd.providers.base import Finish, ProviderError, TextDelta, ThinkingEvent, ToolCallEvent, UsageEvent, cost_of
from chatd.providers.openai_chat import COMPAT, OPENAI, ChatStream, OpenAIChatProvider, build_messages, build_request
from chatd.providers.openai_responses import OpenAIProvider
from fakes import FakeServer, Reply, fixture_events, fixture_json, sse, split
from provider_helpers import WEATHER, client, collect, msg, request, run

KEY = "sk-test-abcdefgh12345678"


def provider(http: httpx.AsyncClient, url: str, **kw) -> OpenAIChatProvider:
    return OpenAIChatProvider(http, base_url=url + "/v1", api_key=KEY, **kw)


def texts(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# ---------------------------------------------------------------- request building
@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer sk-x", "Accept": "text/event-stream", "Content-Type": "application/json"},
    {"x-api-key": "k", "anthropic-version": "2023-06-01", "user-agent": "mine", "ACCEPT": "application/json"},
    {},
])
def test_the_direct_post_carries_what_the_clients_build_request_would(headers):
    """providers/transport.py builds its POST itself (faster); it must be the request httpx would build:
    the same headers in the same order (defaults overridden case-insensitively), URL, body and timeouts."""
    from chatd.providers.transport import _request

    http = client(read_timeout=7.0)
    url = "http://127.0.0.1:9/v1/chat/completions?alt=sse"
    want = http.build_request("POST", url, content=b'{"model": "m"}', headers=headers)
    got = _request(http, url, b'{"model": "m"}', headers)
    assert (got.method, got.url, got.content, got.extensions) == (want.method, want.url, want.content, want.extensions)
    assert got.headers.raw == want.headers.raw


def test_build_request_matches_the_recorded_body():
    body = build_request(request("gpt-4o", msg("user", "Hello!"), system="You are a helpful assistant."))
    assert body == {
        "model": "gpt-4o",
        "messages": [{"role": "developer", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Hello!"}],
        "stream": True, "stream_options": {"include_usage": True},
    }


def test_options_map_to_openai_fields_and_reasoning_models_drop_sampling():
    body = build_request(request("gpt-4o", maxNewTokens=50, temperature=0.2, topP=0.9, stop="END", jsonMode=True))
    assert body["max_completion_tokens"] == 50 and body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["stop"] == ["END"] and body["response_format"] == {"type": "json_object"}
    body = build_request(request("o3", temperature=0.2, reasoningEffort="high",
                                 jsonSchema={"title": "r", "type": "object"}))
    assert "temperature" not in body and body["reasoning_effort"] == "high"
    assert body["response_format"]["json_schema"] == {"name": "r", "schema": {"title": "r", "type": "object"}}
    compat = build_request(request("llama-3.3-70b", maxNewTokens=5, system="s"), COMPAT)
    assert compat["max_tokens"] == 5 and compat["messages"][0]["role"] == "system"


def test_transcript_tool_round_trip_matches_the_schema_example():
    """Fixture (C): the assistant's tool_calls echoed back, then the tool message."""
    req = request("gpt-4o",
                  msg("user", "what's the weather in NYC?"),
                  msg("assistant", p.ToolCallPart(id="call_4XzlGBLtUe9dy3GVNV4jhq7h", name="get_weather",
                                                  arguments={"city": "New York City"})),
                  msg("tool", p.ToolResultPart(call_id="call_4XzlGBLtUe9dy3GVNV4jhq7h", name="get_weather",
                                               output="72F and sunny")),
                  tools=[WEATHER])
    assert build_messages(req) == [
        {"role": "user", "content": "what's the weather in NYC?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_4XzlGBLtUe9dy3GVNV4jhq7h", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"New York City\"}"}}]},
        {"role": "tool", "tool_call_id": "call_4XzlGBLtUe9dy3GVNV4jhq7h", "content": "72F and sunny"},
    ]
    assert build_request(req)["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def test_foreign_transcript_thinking_dropped_ids_remapped_gaps_filled():
    long_id = "toolu_" + "x" * 60  # too long for OpenAI's 40-character ids
    req = request("gpt-4o",
                  msg("user", "go"),
                  msg("assistant", p.ThinkingPart(text="hmm", signature="sig", provider="anthropic"),
                      p.TextPart("calling"), p.ToolCallPart(id=long_id, name="a", arguments={}),
                      p.ToolCallPart(id="", name="b", arguments={"x": 1})),
                  msg("tool", p.ToolResultPart(call_id=long_id, name="a", output={"ok": True})),
                  msg("user", "and?"))
    out = build_messages(req)
    calls = out[1]["tool_calls"]
    assert out[1]["content"] == "calling" and all(len(c["id"]) <= 40 and c["id"] for c in calls)
    assert out[2] == {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"ok":true}'}
    assert out[3]["tool_call_id"] == calls[1]["id"] and "not answered" in out[3]["content"]  # never left open
    assert out[4] == {"role": "user", "content": "and?"}
    assert not any("hmm" in str(m) for m in out)


@pytest.mark.parametrize("seed", range(5))
def test_plain_text_messages_take_a_shortcut_that_gives_the_general_paths_output(seed):
    """A message of one text part skips the general conversion; a thinking part (which Chat Completions
    drops) added to each such message forces the general path, and the messages must come out the same,
    for every role, empty texts, and tool calls left open before them."""
    import random

    from chatd.providers.compat import FAMILIES
    rnd = random.Random(seed)
    plain: list[p.MessageOut] = []
    for i in range(60):
        kind = rnd.choice(["user", "assistant", "system", "tool", "call", "result"])
        if kind == "call":
            plain.append(msg("assistant", p.ToolCallPart(id=f"call_{i}", name="a", arguments={"i": i}), seq=i))
        elif kind == "result":
            plain.append(msg("tool", p.ToolResultPart(call_id=f"call_{i - 1}", name="a", output=str(i)), seq=i))
        else:
            plain.append(msg(kind, rnd.choice(["", "hi", f"text {i}"]), seq=i))
    general = [m if len(m.parts) != 1 or not isinstance(m.parts[0], p.TextPart) else
               msg(m.role, m.parts[0], p.ThinkingPart(text="dropped"), seq=m.seq) for m in plain]
    for dialect in (FAMILIES["mistral"].dialect, OPENAI):
        fast = build_messages(request("gpt-4o", *plain, system="sys"), dialect)
        assert fast == build_messages(request("gpt-4o", *general, system="sys"), dialect)
        assert len(fast) > 30


def test_mistral_gets_nine_character_alphanumeric_ids():
    from chatd.providers.compat import FAMILIES
    req = request("gpt-4o", msg("user", "go"),
                  msg("assistant", p.ToolCallPart(id="call_abc", name="a", arguments={})),
                  msg("tool", p.ToolResultPart(call_id="call_abc", name="a", output="1")))
    out = build_messages(req, FAMILIES["mistral"].dialect)
    new_id = out[1]["tool_calls"][0]["id"]
    assert len(new_id) == 9 and new_id.isalnum() and out[2]["tool_call_id"] == new_id


# ---------------------------------------------------------------- streams through a fake server
def test_text_stream_usage_and_cost(transport):
    async def main():
        async with FakeServer(Reply(chunks=fixture_events("openai_chat_text_stream.txt"))) as srv, client(transport) as http:
            events, err = await collect(provider(http, srv.url), request("gpt-4o", msg("user", "Hello!")))
            return srv, events, err
    srv, events, err = run(main())
    assert err is None
    assert texts(events).startswith("I'm unable") and texts(events).endswith(" app.")
    usage = next(e.usage for e in events if isinstance(e, UsageEvent))
    assert usage == p.Usage(input_tokens=14, output_tokens=30, cached_tokens=0, reasoning_tokens=0)
    assert events[-1] == Finish("stop")
    spec = request("gpt-4o").model
    assert cost_of(spec, usage) == pytest.approx((14 * 2.50 + 30 * 10.00) / 1e6)
    req = srv.requests[0]
    assert req.path == "/v1/chat/completions" and req.headers["authorization"] == f"Bearer {KEY}"
    assert req.json["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("size", [1, 7, 64])
def test_stream_cut_anywhere_gives_the_same_events(size, transport):
    raw = b"".join(fixture_events("openai_chat_toolcall_stream.txt")).replace(b"\n", b"\r\n")
    raw = raw.replace(b'"arguments":"New"', '"arguments":"Nëw"'.encode())  # a 2-byte UTF-8 char to cut

    async def main():
        async with FakeServer(Reply(chunks=split(raw, size))) as srv, client(transport) as http:
            return await collect(provider(http, srv.url), request("gpt-4o"))
    events, err = run(main())
    assert err is None
    assert [e for e in events if isinstance(e, ToolCallEvent)] == [
        ToolCallEvent(id="call_4XzlGBLtUe9dy3GVNV4jhq7h", name="get_weather", arguments={"city": "Nëw York City"})]


def test_tool_call_stream_assembles_fragments_then_usage_then_finish(transport):
    async def main():
        async with FakeServer(Reply(chunks=fixture_events("openai_chat_toolcall_stream.txt"))) as srv, client(transport) as h:
            return await collect(provider(h, srv.url), request("gpt-4o", msg("user", "what's the weather in NYC?"),
                                                               tools=[WEATHER]))
    events, err = run(main())
    assert err is None
    assert events == [
        ToolCallEvent(id="call_4XzlGBLtUe9dy3GVNV4jhq7h", name="get_weather", arguments={"city": "New York City"}),
        UsageEvent(p.Usage(input_tokens=44, output_tokens=16)),
        Finish("tool_calls"),
    ]


def test_parallel_tool_calls_and_reasoning_deltas():
    s = ChatStream()
    out = []
    for chunk in (
        '{"choices":[{"delta":{"reasoning_content":"think "}}]}',
        '{"choices":[{"delta":{"reasoning_content":"more"}}]}',
        '{"choices":[{"delta":{"content":"ok"}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\\"x\\""}},'
        '{"index":1,"id":"b","function":{"name":"g","arguments":""}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}',
        '{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}',
    ):
        out += s.feed(chunk)
    out += s.end()
    assert out == [ThinkingEvent(text="think more"), TextDelta("ok"), ToolCallEvent("a", "f", {"x": 1}),
                   ToolCallEvent("b", "g", {}), Finish("tool_calls")]


def test_refusal_is_surfaced_as_text_with_finish_refusal():
    s = ChatStream()
    out = s.feed('{"choices":[{"delta":{"refusal":"I can\'t help with that."}}]}')
    out += s.feed('{"choices":[{"delta":{},"finish_reason":"stop"}]}') + s.end()
    assert out == [TextDelta("I can't help with that."), Finish("refusal")]


def test_openai_provider_routes_chat_models_to_chat_completions(transport):
    async def main():
        async with FakeServer(Reply(chunks=fixture_events("openai_chat_text_stream.txt"))) as srv, client(transport) as http:
            prov = OpenAIProvider(http, base_url=srv.url + "/v1", api_key=KEY)
            await collect(prov, request("gpt-4.1-mini"))
            return srv.requests[0].path
    assert run(main()) == "/v1/chat/completions"


# ---------------------------------------------------------------- errors
def _error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest.mark.parametrize("status,message,kind", [
    (400, "Invalid value for 'temperature'.", "bad_request"),
    (400, "This model's maximum context length is 128000 tokens.", "context_length"),
    (401, "Incorrect API key provided.", "auth"),
    (500, "The server had an error while processing your request.", "server"),
    (503, "The engine is currently overloaded.", "server"),
])
def test_error_bodies_are_classified_with_the_providers_message(status, message, kind, transport):
    async def main():
        async with FakeServer(Reply.json(status, _error_body(message))) as srv, client(transport) as http:
            return await collect(provider(http, srv.url), request())
    events, err = run(main())
    assert events == [] and err is not None
    assert (err.kind, err.status, err.message) == (kind, status, message)


def test_429_carries_retry_after(transport):
    async def main():
        async with FakeServer([
            Reply.json(429, _error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                       {"retry-after": "20"}),
            Reply.json(429, _error_body("slow down", "tokens"), {"retry-after-ms": "1500", "retry-after": "2"}),
        ]) as srv, client(transport) as http:
            return [(await collect(provider(http, srv.url), request()))[1] for _ in range(2)]
    first, second = run(main())
    assert (first.kind, first.status, first.retry_after) == ("rate_limit", 429, 20.0)
    assert "Rate limit reached" in str(first)
    assert second.retry_after == 1.5


def test_error_object_mid_stream_after_partial_output(transport):
    chunks = fixture_events("openai_chat_text_stream.txt")[:3] + [
        sse({"error": {"message": "The server had an error while processing your request.", "type": "server_error",
                       "param": None, "code": None}})]

    async def main():
        async with FakeServer(Reply(chunks=chunks)) as srv, client(transport) as http:
            return await collect(provider(http, srv.url), request())
    events, err = run(main())
    assert texts(events) == "I'm unable"
    assert err.kind == "stream" and "The server had an error" in err.message


def test_malformed_chunk_is_a_clear_stream_error(transport):
    chunks = fixture_events("openai_chat_text_stream.txt")[:2] + [b'data: {"choices":[{"delta":{"content":"x"}\n\n']

    async def main():
        async with FakeServer(Reply(chunks=chunks)) as srv, client(transport) as http:
            return await collect(provider(http, srv.url), request())
    events, err = run(main())
    assert err.kind == "stream" and "malformed" in err.message
    wrong_type = ChatStream()
    with pytest.raises(Exception) as info:
        wrong_type.feed('{"choices":"nope"}')
    assert type(info.value).__name__ == "ProviderError" and info.value.kind == "stream"


def test_eof_without_finish_is_an_error_not_a_reply(transport):
    chunks = fixture_events("openai_chat_text_stream.txt")[:4]  # no finish_reason, no [DONE]

    async def main():
        async with FakeServer(Reply(chunks=chunks)) as srv, client(transport) as http:
            return await collect(provider(http, srv.url), request())
    events, err = run(main())
    assert err.kind == "stream" and "before the model finished" in err.message


def test_connection_dropped_mid_stream(transport):
    async def main():
        async with FakeServer(Reply(chunks=fixture_events("openai_chat_text_stream.txt"), drop_after=3)) as srv, \
                client(transport) as http:
            return await collect(provider(http, srv.url), request())
    events, err = run(main())
    assert texts(events) == "I'm unable" and err.kind == "stream"


def test_stall_longer_than_the_read_timeout_is_a_timeout(transport):
    async def main():
        async with FakeServer(Reply(chunks=fixture_events("openai_chat_text_stream.txt")[:2], stall=True)) as srv, \
                client(transport, read_timeout=0.3) as http:
            return await collect(provider(http, srv.url), request())
    events, err = run(main())
    assert err.kind == "timeout" and KEY not in str(err)


def test_connection_refused_is_a_connection_error(transport):
    async def main():
        async with FakeServer(Reply()) as srv:
            url = srv.url  # closed on exit: nothing listens there any more
        async with client(transport) as http:
            return await collect(provider(http, url), request())
    events, err = run(main())
    assert err.kind == "connection"


def test_a_gzip_encoded_stream_is_decoded(transport):
    body = gzip.compress(b"".join(fixture_events("openai_chat_text_stream.txt")))
    reply = Reply(chunks=split(body, 97), headers={"content-type": "text/event-stream", "content-encoding": "gzip"})

    async def main():
        async with FakeServer(reply) as srv, client(transport) as http:
            return await collect(provider(http, srv.url), request())
    events, err = run(main())
    assert err is None and texts(events).endswith(" app.") and events[-1] == Finish("stop")


def test_a_stream_left_at_its_end_event_leaves_no_generator_for_the_loop_to_finalize():
    """The provider stops reading at [DONE]; with the daemon's default transport (aiohttp-backed) and
    an unencoded body, the body's chunk generator must be closed then, not dropped for the loop's
    finalizer hook, which wakes the loop through its self-pipe and schedules a task for each dropped
    generator, every turn. (httpx's own transport, and httpx's decoding of an encoded body, nest
    generators of their own that only their finalizer closes: correct, just slower.)"""
    async def main():
        hooks = sys.get_asyncgen_hooks()
        finalized: list[str] = []

        def finalizer(agen):
            finalized.append(agen.ag_code.co_qualname)
            hooks.finalizer(agen)
        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
        try:
            raw = b"".join(fixture_events("openai_chat_text_stream.txt"))
            async with FakeServer(Reply(chunks=[raw])) as srv, client("aiohttp") as http:
                for _ in range(3):
                    events, err = await collect(provider(http, srv.url), request())
                    assert err is None and events[-1] == Finish("stop")
                gc.collect()
        finally:
            sys.set_asyncgen_hooks(*hooks)
        return finalized
    assert run(main()) == []


# ---------------------------------------------------------------- non-streamed replies (`complete`, chat/batch's path)
async def completed(prov: OpenAIChatProvider, req) -> tuple[list, Exception | None]:
    try:
        return await prov.complete(req), None
    except ProviderError as err:
        return [], err


def test_a_non_streamed_request_drops_stream_and_stream_options_only():
    req = request("gpt-4o", msg("user", "Hello!"), system="s", maxNewTokens=9)
    streamed, whole = build_request(req), build_request(req, stream=False)
    assert "stream" not in whole and "stream_options" not in whole
    assert {k: v for k, v in streamed.items() if k not in ("stream", "stream_options")} == whole


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_the_recorded_non_streamed_tool_call_reply_gives_the_streams_events(encoding, transport):
    body, headers = fixture_json("openai_chat_toolcall_nonstream_response.txt"), {"content-type": "application/json"}
    if encoding == "gzip":
        body, headers = gzip.compress(body), {**headers, "content-encoding": "gzip"}

    async def main():
        reply = Reply(chunks=split(body, 50), headers=headers)
        async with FakeServer(reply) as srv, client(transport) as http:
            events, err = await completed(provider(http, srv.url), request("gpt-4o", tools=[WEATHER]))
            return srv.requests[0], events, err
    req, events, err = run(main())
    assert err is None
    assert events == [ToolCallEvent(id="call_abc123", name="get_current_weather", arguments={"location": "Boston, MA"}),
                      UsageEvent(p.Usage(input_tokens=82, output_tokens=17)), Finish("tool_calls")]
    assert "stream" not in req.json and req.headers["accept"] == "application/json"
    assert req.headers["authorization"] == f"Bearer {KEY}"


def test_a_non_streamed_text_reply_with_reasoning_and_cached_usage(transport):
    body = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "length", "message": {
        "role": "assistant", "content": "Forty-two.", "reasoning_content": "think first"}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 10}}}

    async def main():
        async with FakeServer(Reply.json(200, body)) as srv, client(transport) as http:
            return await completed(provider(http, srv.url, dialect=COMPAT), request("deepseek-chat"))
    events, err = run(main())
    assert err is None
    assert events == [ThinkingEvent(text="think first"), TextDelta("Forty-two."),
                      UsageEvent(p.Usage(input_tokens=30, output_tokens=5, cached_tokens=10)), Finish("length")]


@pytest.mark.parametrize("reply, kind, words", [
    (Reply.json(429, _error_body("Rate limit reached", "requests"), {"retry-after": "3"}), "rate_limit", "Rate limit"),
    (Reply.json(400, _error_body("This model's maximum context length is 8192 tokens.")), "context_length", "8192"),
    (Reply.json(200, {"error": {"message": "upstream overloaded", "type": "server_error"}}), "stream", "overloaded"),
    (Reply(chunks=[b"<html>502 Bad Gateway</html>"], headers={"content-type": "text/html"}), "stream", "malformed"),
    (Reply.json(200, {"choices": "nope"}), "stream", "malformed"),
    (Reply(chunks=[b'{"choices":[{"message":{"content":"cut', b'off"}}]}'], drop_after=1), "stream", ""),
])
def test_non_streamed_failures_are_classified_as_the_stream_classifies_them(reply, kind, words, transport):
    async def main():
        async with FakeServer(reply) as srv, client(transport) as http:
            return await completed(provider(http, srv.url), request())
    events, err = run(main())
    assert events == [] and err is not None and err.kind == kind and words in err.message
    assert KEY not in str(err)
    if kind == "rate_limit":
        assert err.retry_after == 3.0


def test_a_non_streamed_reply_that_never_comes_is_a_timeout(transport):
    async def main():
        async with FakeServer(Reply(headers={"content-type": "application/json"}, stall=True)) as srv, \
                client(transport, read_timeout=0.3) as http:
            return await completed(provider(http, srv.url), request())
    events, err = run(main())
    assert err.kind == "timeout" and KEY not in str(err)
