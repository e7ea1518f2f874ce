"""Provider stream parsers fuzzed with truncated and corrupted SSE: every adapter's `stream()` either
yields events or raises a ProviderError (a clear turn error) — never any other exception.

The corrupted bytes come through httpx's own MockTransport (its documented test seam), so each
adapter's whole path runs: status, headers, chunking, SSE, JSON, event assembly."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "providers"))

from fakes import fixture_events  # noqa: E402

from chatd import protocol as p  # noqa: E402
from chatd.models import ModelRegistry  # noqa: E402
from chatd.providers.anthropic import AnthropicProvider  # noqa: E402
from chatd.providers.base import ProviderError, ProviderRequest, ToolSpec  # noqa: E402
from chatd.providers.gemini import GeminiProvider  # noqa: E402
from chatd.providers.openai_chat import OpenAIChatProvider  # noqa: E402
from chatd.providers.openai_responses import OpenAIResponsesProvider  # noqa: E402

REGISTRY = ModelRegistry()
ADAPTERS = {
    "openai_chat": (OpenAIChatProvider, "gpt-4o-mini", ["openai_chat_text_stream.txt", "openai_chat_toolcall_stream.txt"]),
    "openai_responses": (OpenAIResponsesProvider, "gpt-4o-mini", ["openai_responses_text_stream.txt"]),
    "anthropic": (AnthropicProvider, "claude-4-sonnet", ["anthropic_messages_text_stream.txt",
                                                          "anthropic_messages_tool_stream.txt"]),
    "gemini": (GeminiProvider, "gemini-2.0-flash", ["gemini_text_stream.txt", "gemini_tool_stream.txt"]),
}
STREAMS = {name: [b"".join(fixture_events(f)) for f in files] for name, (_, _, files) in ADAPTERS.items()}
EXAMPLES = int(os.environ.get("CHATD_FUZZ_EXAMPLES", "150"))


def _request(model: str) -> ProviderRequest:
    user = p.MessageOut(seq=1, role="user", text="hi", parts=[p.TextPart("hi")])
    return ProviderRequest(model=REGISTRY.get(model), system="s", messages=[user], tools=[
        ToolSpec(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})])


@st.composite
def corrupted(draw, adapter: str) -> tuple[bytes, list[int]]:
    data = bytearray(draw(st.sampled_from(STREAMS[adapter])))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b"data: {", b"\n\n", b"data: [DONE]\n\n", b": ping\n", b"\xff\xfe",
                                                b'data: {"error": {"message": "boom"}}\n\n', b"event: error\n",
                                                b"data: null\n\n", b'data: {"choices": null}\n\n']))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        else:
            end = min(len(data), at + draw(st.integers(1, 200)))
            data[at:at] = data[at:end]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(data) - 1, 1)), max_size=8))))
    return bytes(data), cuts


async def _run(adapter: str, body: bytes, cuts: list[int]) -> tuple[int, ProviderError | None]:
    """(events yielded, the ProviderError that ended the stream, if any); anything else propagates."""
    cls, model, _ = ADAPTERS[adapter]
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if body[a:b]]

    async def stream_body():
        for piece in pieces:
            yield piece

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream_body())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        provider = cls(http, base_url="http://fuzz.invalid", api_key="sk-fuzz-0000000000")
        events = 0
        try:
            async for _ in provider.stream(_request(model)):
                events += 1
        except ProviderError as err:
            assert "sk-fuzz-0000000000" not in str(err)
            return events, err
        return events, None


def _fuzz(adapter: str):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(corrupted(adapter))
    def check(case):
        body, cuts = case
        asyncio.run(_run(adapter, body, cuts))

    return check


test_openai_chat_stream_fuzz = _fuzz("openai_chat")
test_openai_responses_stream_fuzz = _fuzz("openai_responses")
test_anthropic_stream_fuzz = _fuzz("anthropic")
test_gemini_stream_fuzz = _fuzz("gemini")


def test_the_fuzz_inputs_parse_cleanly_when_untouched():
    """The unmodified fixtures stream without error, so the fuzz starts from real, valid streams."""
    for adapter in ADAPTERS:
        for body in STREAMS[adapter]:
            events, error = asyncio.run(_run(adapter, body, []))
            assert error is None and events >= 2, (adapter, error)


def test_truncated_streams_are_turn_errors():
    """A stream cut before its end is a clear ProviderError, not a silently short reply."""
    for adapter in ADAPTERS:
        for body in STREAMS[adapter]:
            events, error = asyncio.run(_run(adapter, body[: len(body) // 2], []))
            assert isinstance(error, ProviderError), adapter
