"""The OpenAI-compatible HTTP face through a real daemon (`chatd serve --http 127.0.0.1:0`), driven by the
official `openai` SDK; the model behind it is a scripted fake OpenAI server, so replies are exact."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

import httpx
import openai
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from chatd_client import AsyncClient  # noqa: E402
from helpers import new_daemon  # noqa: E402
from scripted_openai import FakeServer, openai_env, text_stream  # noqa: E402


def _echoing(req):
    """The fake model answers `heard: <last user text> (<n> messages)`: history is visible in replies."""
    messages = req.json["messages"]
    return text_stream(f"heard: {messages[-1]['content']} ({len(messages)} messages)")


class Face:
    def __init__(self, daemon):
        self.daemon = daemon
        run = daemon.paths.runtime_dir
        self.url = open(os.path.join(run, "http.url")).read().strip()
        self.token_path = os.path.join(run, "http.token")
        self.token = open(self.token_path).read().strip()

    def sdk(self, token=None, **headers) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=token or self.token, max_retries=0,
                                  default_headers=headers or None)


async def _with_face(tmp_path, body):
    async with FakeServer(_echoing) as server:
        d = new_daemon(tmp_path, **openai_env(server))
        d.extra_args = ["--http", "127.0.0.1:0"]
        d.start()
        try:
            await body(Face(d), server)
        finally:
            d.stop()


def test_stateless_completions_streamed_and_not_leave_no_conversation(tmp_path):
    async def body(face, server):
        assert stat.S_IMODE(os.stat(face.token_path).st_mode) == 0o600
        sdk = face.sdk()
        models = [m.id for m in (await sdk.models.list()).data]
        assert "chatd" in models and "gpt-4o-mini" in models

        reply = await sdk.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"}])
        assert reply.choices[0].message.content == "heard: again (4 messages)"
        assert reply.choices[0].finish_reason == "stop" and reply.model == "gpt-4o-mini"
        assert reply.usage.prompt_tokens == 12 and reply.usage.completion_tokens == 7
        sent = server.requests[-1].json["messages"]
        assert sent[0]["content"] == "be brief" and len(sent) == 4

        stream = await sdk.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                   stream_options={"include_usage": True},
                                                   messages=[{"role": "user", "content": "stream me"}])
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "heard: stream me (1 messages)"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage.total_tokens == 19
        async with await AsyncClient.connect(face.daemon.socket) as c:
            assert (await c.request("conversation/list", {}))["conversations"] == []  # nothing stored
        await sdk.close()

    asyncio.run(_with_face(tmp_path, body))


def test_bound_conversation_is_continued_across_calls_and_shared(tmp_path):
    async def body(face, server):
        sdk = face.sdk(**{"chatd-conversation": "notes"})
        first = await sdk.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": "you take notes"}, {"role": "user", "content": "remember 42"}])
        assert first.choices[0].message.content == "heard: remember 42 (2 messages)"
        assert first.model_extra["chatd"]["conversation"] == "notes"
        async with await AsyncClient.connect(face.daemon.socket) as watcher:
            await watcher.request("conversation/subscribe", {"name": "notes"})
            # the client sends only its new message; chatd supplies the history
            stream = await sdk.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                       messages=[{"role": "user", "content": "what number?"}])
            deltas = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
            assert "".join(deltas) == "heard: what number? (4 messages)" and len(deltas) > 1
            got = await watcher.request("conversation/get", {"name": "notes"})
            assert got["conversation"]["system"] == "you take notes"
            assert [(m["role"], m["text"]) for m in got["messages"]] == [
                ("user", "remember 42"), ("assistant", "heard: remember 42 (2 messages)"),
                ("user", "what number?"), ("assistant", "heard: what number? (4 messages)")]
            sent = server.requests[-1].json["messages"]
            assert [m["content"] for m in sent] == ["you take notes", "remember 42",
                                                    "heard: remember 42 (2 messages)", "what number?"]
            # the watcher saw the HTTP turns live
            seen = []
            while not watcher.notifications.empty():
                seen.append(watcher.notifications.get_nowait()[0])
            assert seen.count("chat/turnEnded") == 1 and seen.count("chat/delta") == len(deltas)
        # `chatd show`-style read from the command line
        out = subprocess.run([sys.executable, "-m", "chatd", "call", "conversation/get", '{"name": "notes"}',
                              "--no-start"], env=face.daemon.env, capture_output=True, text=True, check=True)
        assert "what number?" in out.stdout
        # the body field binds too
        plain = face.sdk()
        third = await plain.chat.completions.create(model="gpt-4o-mini", extra_body={"chatd_conversation": "notes"},
                                                    messages=[{"role": "user", "content": "third"}])
        assert third.choices[0].message.content == "heard: third (6 messages)"
        await sdk.close()
        await plain.close()

    asyncio.run(_with_face(tmp_path, body))


def test_wrong_token_cross_origin_and_bad_requests_are_refused(tmp_path):
    async def body(face, server):
        bad = face.sdk(token="chatd-not-the-token")
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
        await bad.close()
        async with httpx.AsyncClient(base_url=face.url) as raw:
            auth = {"Authorization": f"Bearer {face.token}"}
            assert (await raw.get("/v1/models")).status_code == 401  # no token at all
            evil = await raw.post("/v1/chat/completions", headers={**auth, "Origin": "http://evil.example"},
                                  json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
            assert evil.status_code == 403 and evil.json()["error"]["code"] == "forbidden_origin"
            assert not [h for h in evil.headers if h.lower().startswith("access-control-")]
            preflight = await raw.options("/v1/chat/completions", headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
            assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
            rebound = await raw.get("/v1/models", headers={**auth, "Host": "evil.example"})
            assert rebound.status_code == 403
            ok = await raw.get("/v1/models", headers=auth)
            assert ok.status_code == 200 and "access-control-allow-origin" not in ok.headers
            nope = await raw.post("/v1/chat/completions", headers=auth,
                                  json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})
            assert nope.status_code == 404 and nope.json()["error"]["code"] == "model_not_found"
            tools = await raw.post("/v1/chat/completions", headers=auth, json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}]})
            assert tools.status_code == 400
        assert not server.requests  # nothing refused ever reached a model

    asyncio.run(_with_face(tmp_path, body))


def test_http_face_is_loopback_only(tmp_path):
    d = new_daemon(tmp_path)
    out = subprocess.run([sys.executable, "-m", "chatd", "serve", "--http", "0.0.0.0:8080"], env=d.env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "loopback" in out.stderr
