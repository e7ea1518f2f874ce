"""The Gemini adapter against a fake server replaying the recorded wire fixtures, with the official
`google-genai` SDK pointed at the same fake to prove the fake (and chatd's request) honest."""

from __future__ import annotations

import base64
import json

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ag_fakes import Reply, json_fixtures, split_every, sse_fixture
from ag_run import CANARY, msg, request, run, user
from chatd import protocol as p
from chatd.providers.base import (
    Finish, ModelSpec, TextDelta, ThinkingEvent, ToolCallEvent, ToolSpec, UsageEvent, cost_of,
)
from chatd.providers.gemini import SKIP_SIGNATURE, GeminiProvider, build_request

SPEC = ModelSpec(name="gemini-2.0-flash", provider="gemini", api_model="gemini-2.0-flash",
                 input_price=0.1, output_price=0.4, cached_input_price=0.025)
FLASH25 = ModelSpec(name="gemini-2.5-flash", provider="gemini", api_model="gemini-2.5-flash",
                    input_price=0.3, output_price=2.5, cached_input_price=0.075)
TEXT = sse_fixture("gemini_text_stream.txt")
TOOL = sse_fixture("gemini_tool_stream.txt", 0)  # thinking summaries, then a signed call
TOOL_OLD = sse_fixture("gemini_tool_stream.txt", 1)  # an older capture: one call, no usage
SIGNATURE = json.loads(TOOL.split(b"data: ")[3])["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
NOW = ToolSpec(name="now", description="The current date and time")


def sdk(fake) -> genai.Client:
    """One SDK client per fake, kept alive with it (a dropped Client closes its HTTP client mid-call)."""
    if not hasattr(fake, "genai"):
        fake.genai = genai.Client(api_key=CANARY, http_options=types.HttpOptions(base_url=fake.url,
                                                                                  api_version="v1beta"))
    return fake.genai


def texts(events) -> str:
    return "".join(e.text for e in events if type(e) is TextDelta)


def normalised(body):
    """What the SDK re-encodes without changing meaning: schema type case, base64 vs base64url signatures,
    the role it adds to systemInstruction."""
    if isinstance(body, dict):
        out = {}
        for key, value in body.items():
            if key == "type" and isinstance(value, str):
                value = value.lower()
            elif key == "thoughtSignature":
                value = base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_"))
            elif key == "systemInstruction":
                value = {k: v for k, v in value.items() if k != "role"}
            out[key] = normalised(value)
        return out
    if isinstance(body, list):
        return [normalised(x) for x in body]
    return body


# ---------------------------------------------------------------- streaming
@pytest.mark.parametrize("split", [None, 5])
def test_text_stream(fake, split):
    fake.script(Reply(pieces=split_every(TEXT, split)) if split else Reply.sse(TEXT))
    events, err = run(GeminiProvider, fake.url, request(SPEC, [user(1, "What is the capital of Wyoming?")]))
    assert err is None
    assert texts(events) == "The capital of Wyoming is **Cheyenne**.\n"
    assert events[-2:] == [UsageEvent(p.Usage(input_tokens=7, output_tokens=10)), Finish("stop")]
    seen = fake.seen[0]
    assert seen.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert seen.headers["x-goog-api-key"] == CANARY and CANARY not in seen.path
    assert seen.body == {"contents": [{"role": "user", "parts": [{"text": "What is the capital of Wyoming?"}]}]}


def test_sdk_parses_the_fake_and_sends_the_same_request(fake):
    conv = [user(1, "Hello cat."), msg(2, "assistant", p.TextPart("Meow? \n")), user(3, "What do you drink?")]
    schema = {"type": "object", "properties": {"drink": {"type": "string"}}, "required": ["drink"],
              "additionalProperties": False}
    fake.script(Reply.sse(TEXT))
    run(GeminiProvider, fake.url, request(SPEC, conv, system="You are Neko the cat", temperature=0.3, topP=0.9,
                                          stop="END", maxNewTokens=100, jsonSchema=schema))
    chunks = list(sdk(fake).models.generate_content_stream(
        model="gemini-2.0-flash",
        contents=[types.Content(role="user", parts=[types.Part(text="Hello cat.")]),
                  types.Content(role="model", parts=[types.Part(text="Meow? \n")]),
                  types.Content(role="user", parts=[types.Part(text="What do you drink?")])],
        config=types.GenerateContentConfig(
            system_instruction="You are Neko the cat", temperature=0.3, top_p=0.9, stop_sequences=["END"],
            max_output_tokens=100, response_mime_type="application/json",
            response_schema={"type": "object", "properties": {"drink": {"type": "string"}}, "required": ["drink"]})))
    assert "".join(c.text for c in chunks) == "The capital of Wyoming is **Cheyenne**.\n"
    assert chunks[-1].usage_metadata.candidates_token_count == 10
    ours, theirs = fake.seen[0], fake.seen[1]
    assert normalised(ours.body) == normalised(theirs.body)
    assert ours.path == theirs.path
    assert ours.headers["x-goog-api-key"] == theirs.headers["x-goog-api-key"] == CANARY


# ---------------------------------------------------------------- tools and thought signatures
def test_tool_call_with_signature_round_trip_matches_the_sdk(fake):
    fake.script(Reply.sse(TOOL))
    conv = [user(1, "How many days until New Year's Eve?")]
    events, err = run(GeminiProvider, fake.url, request(FLASH25, conv, tools=[NOW]))
    assert err is None
    thoughts = [e for e in events if type(e) is ThinkingEvent]
    assert thoughts[0].text.startswith("**Calculating the Days**") and thoughts[0].signature is None
    assert thoughts[-1] == ThinkingEvent(signature=SIGNATURE)
    call = next(e for e in events if type(e) is ToolCallEvent)
    assert events[events.index(call) - 1] == thoughts[-1]  # the signature comes right before its call
    assert (call.name, call.arguments) == ("now", {})
    assert texts(events) == ""  # thought summaries are not answer text
    assert events[-2:] == [UsageEvent(p.Usage(input_tokens=38, output_tokens=174, reasoning_tokens=168)),
                           Finish("tool_calls")]
    again, _ = run(GeminiProvider, fake.url, request(FLASH25, conv, tools=[NOW]))
    assert next(e for e in again if type(e) is ToolCallEvent).id == call.id  # synthesised ids are stable
    assert fake.seen[0].body["tools"] == [{"functionDeclarations": [{"name": "now", "description": NOW.description}]}]

    chunks = list(sdk(fake).models.generate_content_stream(model="gemini-2.5-flash", contents=conv[0].text))
    sdk_content = chunks[-1].candidates[0].content
    assert sdk_content.parts[0].function_call.name == "now"
    assert sdk_content.parts[0].thought_signature == base64.b64decode(SIGNATURE)

    # Turn 2 as the conversation stores it: thinking parts, then the call, then the tool's result.
    conv += [msg(2, "assistant", *[p.ThinkingPart(t.text, t.signature, "gemini") for t in thoughts],
                 p.ToolCallPart(call.id, call.name, call.arguments)),
             msg(3, "tool", p.ToolResultPart(call.id, "now", "2025-07-28T12:00:00Z"))]
    fake.script(Reply.sse(TEXT))
    run(GeminiProvider, fake.url, request(FLASH25, conv))
    list(sdk(fake).models.generate_content_stream(model="gemini-2.5-flash", contents=[
        types.Content(role="user", parts=[types.Part(text=conv[0].text)]), sdk_content,
        types.Content(role="user", parts=[types.Part.from_function_response(
            name="now", response={"output": "2025-07-28T12:00:00Z"})])]))
    ours = fake.seen[0].body["contents"]
    assert ours[1] == {"role": "model", "parts": [{"functionCall": {"name": "now", "args": {}},
                                                   "thoughtSignature": SIGNATURE}]}  # echoed byte for byte
    assert normalised(fake.seen[0].body) == normalised(fake.seen[1].body)


def test_older_call_without_usage_or_ids(fake):
    fake.script(Reply.sse(TOOL_OLD))
    events, err = run(GeminiProvider, fake.url, request(SPEC, [user(1, "temp in San Jose?")]))
    assert err is None
    call = events[0]
    assert call.name == "getTemperature" and call.arguments == {"city": "San Jose"} and call.id.startswith("call_")
    assert events[-2:] == [UsageEvent(p.Usage()), Finish("tool_calls")]


def test_usage_and_cost(fake):
    fake.script(Reply.sse(b'data: {"candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"}, '
                          b'"finishReason": "MAX_TOKENS"}], "usageMetadata": {"promptTokenCount": 1000, '
                          b'"cachedContentTokenCount": 800, "candidatesTokenCount": 50, "thoughtsTokenCount": 150}}'
                          b'\r\n\r\n'))
    events, _ = run(GeminiProvider, fake.url, request(FLASH25, [user(1, "q")]))
    usage = events[-2].usage
    assert usage == p.Usage(input_tokens=1000, output_tokens=200, cached_tokens=800, reasoning_tokens=150)
    assert events[-1] == Finish("length")
    assert cost_of(FLASH25, usage) == pytest.approx((200 * 0.3 + 800 * 0.075 + 200 * 2.5) / 1e6)
    assert cost_of(SPEC, p.Usage(input_tokens=7, output_tokens=10)) == pytest.approx((7 * 0.1 + 10 * 0.4) / 1e6)


# ---------------------------------------------------------------- transcripts from other providers
def test_transcript_from_other_providers_is_valid():
    conv = [
        user(1, "weather in Paris and Rome?"),
        msg(2, "assistant", p.ThinkingPart("claude thinking", "EqQBsig==", "anthropic"), p.TextPart("Checking."),
            p.ToolCallPart("call_Ab3dEf9GhIjK", "get_weather", {"location": "Paris"}),
            p.ToolCallPart("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Rome"})),
        msg(3, "tool", p.ToolResultPart("call_Ab3dEf9GhIjK", "get_weather", {"temp": 20})),
        msg(4, "tool", p.ToolResultPart("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", "boom", is_error=True)),
        msg(5, "assistant", p.TextPart("Paris 20, Rome unknown.")),
        user(6, "thanks"),
    ]
    tools = [ToolSpec(name="get_weather", description="w", parameters={
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
        "properties": {"location": {"type": ["string", "null"], "description": "city"}}})]
    body = build_request(request(SPEC, conv, system="sys", tools=tools))
    contents = body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
    calls = [x["functionCall"] for x in contents[1]["parts"] if "functionCall" in x]
    responses = [x["functionResponse"] for x in contents[2]["parts"]]
    assert [c["name"] for c in calls] == [r["name"] for r in responses] == ["get_weather", "get_weather"]
    assert responses == [{"name": "get_weather", "response": {"temp": 20}},
                         {"name": "get_weather", "response": {"error": "boom"}}]
    assert "EqQBsig==" not in json.dumps(body)  # another provider's thinking is dropped, and ids are not sent
    assert "call_Ab3dEf9GhIjK" not in json.dumps(body)
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert body["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "object", "properties": {"location": {"type": "string", "nullable": True, "description": "city"}}}
    # Gemini 3 needs a signature on replayed calls: a call from another provider gets Google's sentinel.
    gemini3 = ModelSpec(name="g3", provider="gemini", api_model="gemini-3-flash-preview")
    parts = build_request(request(gemini3, conv))["contents"][1]["parts"]
    assert [x.get("thoughtSignature") for x in parts] == [None, SKIP_SIGNATURE, None]


def test_signature_on_text_and_order_kept():
    conv = [user(1, "q"), msg(2, "assistant", p.ThinkingPart("", "sigA", "gemini"), p.TextPart("answer"),
                              p.ThinkingPart("", "sigB", "gemini")), user(3, "more")]
    parts = build_request(request(SPEC, conv))["contents"][1]["parts"]
    assert parts == [{"text": "answer", "thoughtSignature": "sigA"},
                     {"text": "", "thought": True, "thoughtSignature": "sigB"}]


@pytest.mark.parametrize("stored,signed", [
    # the signature, then text buffered before the call, then the call: the call gets it (Gemini 3's rule)
    (["sig:S", "text", "call1"], {"call1": "S"}),
    (["text", "sig:S", "call1", "call2"], {"call1": "S"}),  # parallel calls: only the first is signed
    (["sig:T", "text", "sig:C", "call1"], {"text": "T", "call1": "C"}),
    (["sig:A", "call1", "sig:B", "call2"], {"call1": "A", "call2": "B"}),  # sequential steps
])
def test_signatures_find_their_parts(stored, signed):
    parts = []
    for item in stored:
        if item.startswith("sig:"):
            parts.append(p.ThinkingPart("", item[4:], "gemini"))
        elif item == "text":
            parts.append(p.TextPart("text"))
        else:
            parts.append(p.ToolCallPart(item, item, {}))
    body = build_request(request(SPEC, [user(1, "q"), msg(2, "assistant", *parts)]))
    got = {(x.get("functionCall") or {}).get("name", "text"): x["thoughtSignature"]
           for x in body["contents"][1]["parts"] if "thoughtSignature" in x}
    assert got == signed


# ---------------------------------------------------------------- errors
KEY_ERROR, MODEL_ERROR, QUOTA_ERROR = json_fixtures("gemini_errors.txt")


def echoing_key(body):
    """The recorded invalid-key body, echoing *our* key as Gemini does."""
    return json.loads(json.dumps(body).replace("key1234", CANARY))


@pytest.mark.parametrize("status,body,kind,retry_after,needle", [
    (400, echoing_key(KEY_ERROR), "auth", None, "API key not valid"),
    (404, MODEL_ERROR, "bad_request", None, "is not found"),
    (429, QUOTA_ERROR, "rate_limit", 17.0, "exceeded your current quota"),
    (503, {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
     "overloaded", None, "overloaded"),
    (500, b"<html>oops</html>", "server", None, "oops"),
])
def test_error_bodies(fake, status, body, kind, retry_after, needle):
    fake.script(Reply.json(status, body))
    events, err = run(GeminiProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert events == [] and err is not None
    assert (err.kind, err.status, err.retry_after) == (kind, status, retry_after)
    assert needle in str(err)
    assert CANARY not in str(err) and CANARY not in repr(err.args)


def test_sdk_sees_the_same_key_error(fake):
    fake.script(Reply.json(400, echoing_key(KEY_ERROR)))
    with pytest.raises(genai_errors.ClientError) as info:
        list(sdk(fake).models.generate_content_stream(model="gemini-2.0-flash", contents="hi"))
    assert info.value.code == 400 and "API key not valid" in str(info.value)


def test_error_mid_stream(fake):
    head = TEXT.split(b"data: ")
    error = b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\r\n\r\n'
    fake.script(Reply(pieces=[b"data: " + head[1], error]))
    events, err = run(GeminiProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert texts(events) == "The"
    assert err.kind == "overloaded"


@pytest.mark.parametrize("bad", [b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"te\r\n\r\n",
                                 b"data: 42\r\n\r\n",
                                 b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {}}]}}]}\r\n\r\n"])
def test_malformed_chunk(fake, bad):
    fake.script(Reply(pieces=[b"data: " + TEXT.split(b"data: ")[1], bad]))
    events, err = run(GeminiProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert texts(events) == "The" and err.kind == "stream"


def test_stream_cut_short_and_dropped(fake):
    first = b"data: " + TEXT.split(b"data: ")[1]
    fake.script(Reply(pieces=[first]))  # ends cleanly but without a finishReason
    _, err = run(GeminiProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert err.kind == "stream" and "finishReason" in err.message
    fake.script(Reply(pieces=[first], drop=True))  # the socket closes mid-body: the stream broke
    _, err = run(GeminiProvider, fake.url, request(SPEC, [user(1, "hi")]))
    assert err.kind == "stream" and CANARY not in str(err)
