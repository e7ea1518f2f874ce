"""One conversation moving between providers with tool calls in between: OpenAI-made history, then
Anthropic, then Gemini, then Anthropic and Gemini again, each reply streamed from the fakes and stored as
the conversation service stores it. Every request must stay valid for the provider it goes to."""

from __future__ import annotations

import itertools
import re

from ag_fakes import Reply, sse_fixture
from ag_run import msg, request, run, user
from chatd import protocol as p
from chatd.providers.anthropic import AnthropicProvider
from chatd.providers.base import ModelSpec, TextDelta, ThinkingEvent, ToolCallEvent, ToolSpec
from chatd.providers.gemini import GeminiProvider

CLAUDE = ModelSpec(name="claude", provider="anthropic", api_model="claude-sonnet-4-5")
GEMINI = ModelSpec(name="gemini", provider="gemini", api_model="gemini-3-flash-preview")
TOOLS = [ToolSpec(name="get_weather", parameters={"type": "object", "properties": {"location": {"type": "string"}}}),
         ToolSpec(name="now")]


def stored(events, provider: str) -> list:
    """Events -> parts the way the conversation service stores them (text buffered until a tool call)."""
    parts, text = [], []
    for e in events:
        if type(e) is TextDelta:
            text.append(e.text)
        elif type(e) is ToolCallEvent:
            if text:
                parts.append(p.TextPart("".join(text)))
                text = []
            parts.append(p.ToolCallPart(e.id, e.name, e.arguments))
        elif type(e) is ThinkingEvent:
            parts.append(p.ThinkingPart(e.text, e.signature, provider))
    if text:
        parts.append(p.TextPart("".join(text)))
    return parts


def results_for(seq: int, parts: list) -> p.MessageOut:
    return msg(seq, "tool", *[p.ToolResultPart(x.id, x.name, {"ok": x.name}) for x in parts
                              if type(x) is p.ToolCallPart])


def assert_valid_anthropic(body: dict) -> None:
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2) + ["user"]
    for i, m in enumerate(messages):
        blocks = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        assert blocks and all(b.get("text", "x") for b in blocks)  # no empty text blocks
        uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
        assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", u) for u in uses)
        if uses:
            answer = messages[i + 1]["content"]
            ids = [b["tool_use_id"] for b in answer[:len(uses)] if b["type"] == "tool_result"]
            assert ids == uses  # every call answered, results first, in the next user message
        assert all(b["type"] != "thinking" or b["signature"] for b in blocks)


def assert_valid_gemini(body: dict) -> None:
    contents = body["contents"]
    roles = [c["role"] for c in contents]
    assert all(a != b for a, b in itertools.pairwise(roles)) and roles[0] == "user" and set(roles) <= {"user", "model"}
    for i, c in enumerate(contents):
        calls = [x["functionCall"]["name"] for x in c["parts"] if "functionCall" in x]
        if calls:
            assert "thoughtSignature" in next(x for x in c["parts"] if "functionCall" in x)  # Gemini 3's rule
            answers = [x["functionResponse"]["name"] for x in contents[i + 1]["parts"] if "functionResponse" in x]
            assert answers == calls
        assert all("id" not in (x.get("functionCall") or x.get("functionResponse") or {}) for x in c["parts"])


def test_openai_then_anthropic_then_gemini_then_both_again(fake):
    conv = [user(1, "Weather in Paris, then the time?"),
            msg(2, "assistant", p.ThinkingPart("o-reasoning", None, "openai"),
                p.ToolCallPart("call_9xQ2mZ", "get_weather", {"location": "Paris"})),
            msg(3, "tool", p.ToolResultPart("call_9xQ2mZ", "get_weather", "18C"))]

    fake.script(Reply.sse(sse_fixture("anthropic_messages_tool_stream.txt")))
    events, err = run(AnthropicProvider, fake.url, request(CLAUDE, conv, tools=TOOLS))
    assert err is None
    assert_valid_anthropic(fake.seen[0].body)
    parts = stored(events, "anthropic")
    conv += [msg(4, "assistant", *parts), results_for(5, parts)]

    fake.script(Reply.sse(sse_fixture("gemini_tool_stream.txt", 0)))
    events, err = run(GeminiProvider, fake.url, request(GEMINI, conv, tools=TOOLS))
    assert err is None
    assert_valid_gemini(fake.seen[0].body)
    parts = stored(events, "gemini")
    gemini_signature = next(x.signature for x in parts if type(x) is p.ThinkingPart and x.signature)
    conv += [msg(6, "assistant", *parts), results_for(7, parts), user(8, "thanks, and summarise")]

    fake.script(Reply.sse(sse_fixture("anthropic_messages_text_stream.txt")))
    _, err = run(AnthropicProvider, fake.url, request(CLAUDE, conv, tools=TOOLS))
    assert err is None
    body = fake.seen[0].body
    assert_valid_anthropic(body)
    assert gemini_signature not in str(body) and "o-reasoning" not in str(body)

    fake.script(Reply.sse(sse_fixture("gemini_text_stream.txt")))
    _, err = run(GeminiProvider, fake.url, request(GEMINI, conv, tools=TOOLS))
    assert err is None
    body = fake.seen[0].body
    assert_valid_gemini(body)
    signed = [x["thoughtSignature"] for c in body["contents"] for x in c["parts"] if "thoughtSignature" in x]
    assert gemini_signature in signed  # Gemini's own signature went back unchanged
