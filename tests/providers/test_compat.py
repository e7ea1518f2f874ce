"""The OpenAI-compatible family: the quirks of openai_compatible_quirks.txt served by the fake, the
family table, and the local-server probe."""

from __future__ import annotations

import json

from chatd import protocol as p
from chatd.providers.base import Finish, TextDelta, ThinkingEvent, ToolCallEvent, UsageEvent
from chatd.providers.compat import FAMILIES, local_bases, ollama_base, probe_local
from chatd.providers.openai_chat import OpenAIChatProvider
from fakes import FakeServer, Reply, fixture_events, fixture_text, sse
from provider_helpers import client, collect, msg, request, run

KEEPALIVE = next(ln for ln in fixture_text("openai_compatible_quirks.txt").splitlines() if ln.startswith(": "))


def compat(http, url: str, name: str = "groq") -> OpenAIChatProvider:
    return OpenAIChatProvider(http, base_url=url + "/v1", api_key=None, name=name, dialect=FAMILIES[name].dialect)


def stream_of(chunks: list[bytes], model: str = "llama-3.3-70b", name: str = "groq"):
    async def main():
        async with FakeServer(Reply(chunks=chunks)) as srv, client() as http:
            events, err = await collect(compat(http, srv.url, name), request(model, msg("user", "hi"), system="sys"))
            return events, err, srv.requests[0]
    return run(main())


def test_family_table_covers_the_named_providers():
    assert set(FAMILIES) == {"groq", "together", "fireworks", "deepseek", "mistral", "openrouter", "xai", "cerebras",
                             "ollama", "vllm", "llamacpp", "lmstudio"}
    assert local_bases() == {"ollama": "http://127.0.0.1:11434/v1", "vllm": "http://127.0.0.1:8000/v1",
                             "llamacpp": "http://127.0.0.1:8080/v1", "lmstudio": "http://127.0.0.1:1234/v1"}
    assert all(f.key_env and f.key_env.endswith("_API_KEY") for f in FAMILIES.values() if not f.local)
    assert ollama_base("0.0.0.0:11434") == "http://0.0.0.0:11434/v1" and ollama_base(":9") == "http://127.0.0.1:9/v1"


def test_keepalive_comments_and_null_choices_on_the_usage_chunk():
    recorded = fixture_events("openai_chat_text_stream.txt")
    usage_chunk = json.loads(recorded[-2][6:])
    usage_chunk["choices"] = None  # vLLM
    chunks = [KEEPALIVE.encode() + b"\n\n", *recorded[:3], b": keepalive\n\n", *recorded[3:-2], sse(usage_chunk),
              b"data: [DONE]\n\n"]
    events, err, req = stream_of(chunks)
    assert err is None and events[0] == TextDelta("I'm")
    assert UsageEvent(p.Usage(input_tokens=14, output_tokens=30)) in events and events[-1] == Finish("stop")
    assert req.json["messages"][0] == {"role": "system", "content": "sys"}
    assert req.json["model"] == "llama-3.3-70b-versatile" and "authorization" not in req.headers


def test_error_object_with_http_200_openrouter_style():
    chunks = [sse({"id": "gen-1", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
              sse({"id": "gen-1", "error": {"code": 502, "message": "Provider returned error"},
                   "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})]
    events, err, _ = stream_of(chunks, name="openrouter")
    assert events == [TextDelta("Hel")] and err.kind == "stream" and "Provider returned error" in err.message


def test_tool_calls_without_ids_get_synthesised_ids():
    chunks = [sse({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                  {"index": 0, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                  {"index": 1, "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}}]}),
              sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
              sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                                            "prompt_cache_hit_tokens": 3}}),
              b"data: [DONE]\n\n"]
    events, err, _ = stream_of(chunks, name="ollama")
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    assert err is None and [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Oslo"}), ("get_time", {})]
    assert all(c.id for c in calls) and len({c.id for c in calls}) == 2
    assert UsageEvent(p.Usage(input_tokens=5, output_tokens=7, cached_tokens=3)) in events


def test_reasoning_content_becomes_one_thinking_event():
    chunks = [sse({"choices": [{"delta": {"reasoning_content": "Let me "}}]}),
              sse({"choices": [{"delta": {"reasoning_content": "think."}}]}),
              sse({"choices": [{"delta": {"content": "42"}, "finish_reason": "stop"}]}), b"data: [DONE]\n\n"]
    events, err, _ = stream_of(chunks, name="deepseek")
    assert events == [ThinkingEvent(text="Let me think."), TextDelta("42"), Finish("stop")]


def test_compat_error_bodies_with_integer_codes():
    async def main():
        async with FakeServer([
            Reply.json(404, {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError",
                                       "code": 404, "param": None}}),
            Reply.json(402, {"error": {"code": 402, "message": "Insufficient credits"}}),
            Reply.json(429, {"error": {"message": "Rate limit reached for model in organization on tokens per "
                                                  "minute (TPM). Please try again in 5.289s.", "type": "tokens",
                                       "code": "rate_limit_exceeded"}}, {"retry-after": "6"}),
        ]) as srv, client() as http:
            return [(await collect(compat(http, srv.url), request("llama-3.3-70b")))[1] for _ in range(3)]
    vllm, credits, groq = run(main())
    assert (vllm.kind, vllm.message) == ("bad_request", "The model `x` does not exist.")
    assert (credits.status, credits.message) == (402, "Insufficient credits")
    assert (groq.kind, groq.retry_after) == ("rate_limit", 6.0) and "5.289s" in groq.message


def test_probe_local_lists_models_of_running_servers_only():
    models = {"object": "list", "data": [{"id": "llama3.2:3b", "object": "model"}, {"id": "qwen2.5:7b"}]}

    async def main():
        async with FakeServer(Reply.json(200, models)) as srv:
            async with FakeServer(Reply()) as gone:
                dead = gone.url
            async with client() as http:
                return await probe_local(http, {"ollama": srv.url + "/v1", "llamacpp": dead + "/v1"})
    assert run(main()) == {"ollama": ["llama3.2:3b", "qwen2.5:7b"]}
