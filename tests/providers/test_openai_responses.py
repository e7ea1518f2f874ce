"""OpenAI Responses API: request building, named-event streams (recorded text fixture, and a tool-call
stream built to the schema in openai_responses_text_stream.txt's notes), terminal and error events."""

from __future__ import annotations

from chatd import protocol as p
from chatd.providers.base import Finish, TextDelta, ThinkingEvent, ToolCallEvent, UsageEvent
from chatd.providers.openai_responses import OpenAIProvider, ResponsesStream, build_request
from fakes import FakeServer, Reply, fixture_events, sse
from provider_helpers import WEATHER, client, collect, msg, request, run

KEY = "sk-test-responses-12345678"
_RESP = {"id": "resp_1", "object": "response", "created_at": 1741290958, "status": "in_progress", "model": "gpt-5",
         "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
         "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": 1.0, "top_p": 1.0}
_CALL = {"id": "fc_1", "type": "function_call", "call_id": "call_unLAR8MvFNptuiZK6K6HCy5k", "name": "get_weather",
         "arguments": "", "status": "in_progress"}
_DONE_CALL = {**_CALL, "arguments": "{\"city\":\"New York City\"}", "status": "completed"}
_REASONING = {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Need weather."}],
              "encrypted_content": "gAAAAB-opaque"}
TOOL_STREAM = [
    sse({"type": "response.created", "sequence_number": 0, "response": _RESP}, "response.created"),
    sse({"type": "response.output_item.done", "sequence_number": 1, "output_index": 0, "item": _REASONING},
        "response.output_item.done"),
    sse({"type": "response.output_item.added", "sequence_number": 2, "output_index": 1, "item": _CALL},
        "response.output_item.added"),
    sse({"type": "response.function_call_arguments.delta", "sequence_number": 3, "item_id": "fc_1",
         "output_index": 1, "delta": "{\"city\":"}, "response.function_call_arguments.delta"),
    sse({"type": "response.function_call_arguments.delta", "sequence_number": 4, "item_id": "fc_1",
         "output_index": 1, "delta": "\"New York City\"}"}, "response.function_call_arguments.delta"),
    sse({"type": "response.function_call_arguments.done", "sequence_number": 5, "item_id": "fc_1",
         "output_index": 1, "arguments": "{\"city\":\"New York City\"}"}, "response.function_call_arguments.done"),
    sse({"type": "response.output_item.done", "sequence_number": 6, "output_index": 1, "item": _DONE_CALL},
        "response.output_item.done"),
    sse({"type": "response.completed", "sequence_number": 7, "response": {
        **_RESP, "status": "completed", "output": [_REASONING, _DONE_CALL],
        "usage": {"input_tokens": 60, "input_tokens_details": {"cached_tokens": 40}, "output_tokens": 30,
                  "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 90}}}, "response.completed"),
]


def test_build_request_shape():
    req = request("gpt-5",
                  msg("user", "weather?"),
                  msg("assistant", p.ThinkingPart(text="Need weather.", signature="rs_1:gAAAAB-opaque", provider="openai"),
                      p.ThinkingPart(text="claude's", signature="x", provider="anthropic"),
                      p.ToolCallPart(id="call_1", name="get_weather", arguments={"city": "NYC"})),
                  msg("tool", p.ToolResultPart(call_id="call_1", name="get_weather", output="72F")),
                  system="be brief", tools=[WEATHER], maxNewTokens=99, temperature=0.3, reasoningEffort="low")
    body = build_request(req)
    assert body["instructions"] == "be brief" and body["store"] is False and body["stream"] is True
    assert body["max_output_tokens"] == 99 and "temperature" not in body
    assert body["reasoning"] == {"summary": "auto", "effort": "low"}
    assert body["tools"] == [{"type": "function", "name": "get_weather", "parameters": WEATHER.parameters,
                              "strict": False}]
    assert body["input"] == [
        {"role": "user", "content": "weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need weather."}],
         "encrypted_content": "gAAAAB-opaque"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"NYC\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "72F"},
    ]


def test_text_stream_from_the_recorded_fixture():
    async def main():
        async with FakeServer(Reply(chunks=fixture_events("openai_responses_text_stream.txt"))) as srv, client() as h:
            prov = OpenAIProvider(h, base_url=srv.url + "/v1", api_key=KEY)
            return srv, await collect(prov, request("gpt-5", msg("user", "Hello!")))
    srv, (events, err) = run(main())
    assert err is None and srv.requests[0].path == "/v1/responses"
    assert events == [TextDelta("Hi"), UsageEvent(p.Usage(input_tokens=37, output_tokens=11)), Finish("stop")]


def test_tool_call_stream_reasoning_and_usage():
    async def main():
        async with FakeServer(Reply(chunks=TOOL_STREAM)) as srv, client() as h:
            prov = OpenAIProvider(h, base_url=srv.url + "/v1", api_key=KEY)
            return await collect(prov, request("o4-mini", msg("user", "weather?"), tools=[WEATHER]))
    events, err = run(main())
    assert err is None
    assert events == [
        ThinkingEvent(text="Need weather.", signature="rs_1:gAAAAB-opaque"),
        ToolCallEvent(id="call_unLAR8MvFNptuiZK6K6HCy5k", name="get_weather", arguments={"city": "New York City"}),
        UsageEvent(p.Usage(input_tokens=60, output_tokens=30, cached_tokens=40, reasoning_tokens=12)),
        Finish("tool_calls"),
    ]


def test_failed_error_incomplete_and_truncated_streams():
    s = ResponsesStream()
    try:
        s.feed("response.failed", '{"type":"response.failed","response":{"error":{"code":"server_error",'
               '"message":"The model failed."}}}')
    except Exception as err:
        assert err.kind == "stream" and "The model failed." in err.message
    else:
        raise AssertionError("no error")
    s = ResponsesStream()
    try:
        s.feed("error", '{"type":"error","code":"rate_limit_exceeded","message":"Too many.","param":null}')
    except Exception as err:
        assert err.kind == "stream" and "Too many." in err.message
    s = ResponsesStream()
    out = s.feed(None, '{"type":"response.incomplete","response":{"incomplete_details":{"reason":"max_output_tokens"},'
                       '"usage":{"input_tokens":1,"output_tokens":2}}}') + s.end()
    assert out[-1] == Finish("length")
    s = ResponsesStream()
    s.feed(None, '{"type":"response.output_text.delta","delta":"Hi"}')
    try:
        s.end()
    except Exception as err:
        assert err.kind == "stream"
    else:
        raise AssertionError("truncated stream accepted")
