"""Keys never leave memory: a canary key in every key variable and in `api-key-cmd` output never
appears in the database, the log (at DEBUG), any RPC reply, notification or error, or daemon/status —
even when the provider echoes the key back in its error. Also: local servers show their models."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import sys

from chatd.providers.compat import FAMILIES
from chatd_client import AsyncClient, RpcError
from helpers import new_daemon
from scripted_openai import FakeServer, Reply, text_stream

CANARY = "sk-canary-7f3e9a1c5b2d4e6f8a0b"
KEY_VARS = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
            *[f.key_env for f in FAMILIES.values() if f.key_env]]


def _leaky(req):
    """A provider that puts the key it was sent into its error body, as Gemini does for bad keys."""
    sent = req.headers.get("authorization", "") + req.headers.get("x-api-key", "")
    if "please-fail" in req.body.decode():
        return Reply.json(401, {"error": {"message": f"Incorrect API key provided: {sent}",
                                          "type": "invalid_request_error", "code": "invalid_api_key"}})
    return text_stream("fine")


def test_canary_key_never_leaves_memory(tmp_path):
    async def main():
        async with FakeServer(_leaky) as server:
            env = {var: CANARY for var in KEY_VARS}
            env["OPENAI_BASE_URL"] = f"{server.url}/v1"
            env["CHATD_LOG_LEVEL"] = "DEBUG"
            d = new_daemon(tmp_path, **env)
            key_cmd = tmp_path / "keycmd.py"
            key_cmd.write_text(f"print({CANARY + '-cmd'!r})\n")
            os.makedirs(os.path.dirname(d.paths.config_file), exist_ok=True)
            with open(d.paths.config_file, "w") as f:
                f.write(f'[providers.gpu-box]\nkind = "openai-compatible"\nbase-url = "{server.url}/v1"\n'
                        f'api-key-cmd = "{sys.executable} {key_cmd}"\n'
                        '[models.box-model]\nprovider = "gpu-box"\napi-model = "m"\n')
            d.start()
            seen: list[str] = []
            try:
                c = await AsyncClient.connect(d.socket)
                c.on_notification = lambda m, prm: seen.append(json.dumps([m, prm]))
                await c.request("conversation/subscribe", {"name": "*"})
                for method, params in [
                    ("daemon/status", {}), ("models/list", {}), ("tools/list", {}),
                    ("chat/send", {"conversation": "k", "text": "hello", "models": ["gpt-4o-mini"]}),
                    ("chat/send", {"conversation": "k", "text": "hello", "models": ["box-model"]}),
                    ("chat/send", {"conversation": "k", "text": "please-fail", "models": ["gpt-4o-mini"]}),
                    ("chat/send", {"conversation": "k", "text": "please-fail", "models": ["box-model"]}),
                    ("conversation/get", {"name": "k"}),
                ]:
                    try:
                        seen.append(json.dumps(await c.request(method, params)))
                    except RpcError as err:
                        seen.append(json.dumps([err.code, err.message, err.data]))
                await c.close()
                # the fake did receive the keys: the canary test is not vacuous
                sent = [r.headers.get("authorization", "") for r in server.requests]
                assert f"Bearer {CANARY}" in sent and f"Bearer {CANARY}-cmd" in sent
                assert any("Incorrect API key" in s for s in seen)
            finally:
                d.stop()
        everything = "\n".join(seen)
        assert CANARY not in everything
        for path in glob.glob(os.path.join(d.home, "**", "*"), recursive=True):
            if os.path.isfile(path) and not path.endswith(".py"):
                with open(path, "rb") as f:
                    assert CANARY.encode() not in f.read(), path
        assert "DEBUG" in d.log()  # debug logging really was on

    asyncio.run(main())


def test_a_local_server_shows_its_models_and_answers(tmp_path):
    def local(req):
        if req.method == "GET" and req.path.endswith("/models"):
            return Reply.json(200, {"object": "list", "data": [{"id": "qwen2.5-coder:7b", "object": "model"}]})
        return text_stream("hello from the local model")

    async def main():
        async with FakeServer(local) as server:
            d = new_daemon(tmp_path)
            os.makedirs(os.path.dirname(d.paths.config_file), exist_ok=True)
            with open(d.paths.config_file, "w") as f:
                f.write(f'[providers.ollama]\nbase-url = "{server.url}/v1"\n')
            d.start()
            try:
                c = await AsyncClient.connect(d.socket)
                models = {m["name"]: m for m in (await c.request("models/list"))["models"]}
                local_model = models["ollama/qwen2.5-coder:7b"]
                assert local_model["provider"] == "ollama" and local_model["keyPresent"]
                r = await c.request("chat/send", {"conversation": "l", "text": "hi",
                                                  "models": ["ollama/qwen2.5-coder:7b"]})
                assert r["message"]["text"] == "hello from the local model"
                body = server.requests[-1].json
                assert body["model"] == "qwen2.5-coder:7b"
                await c.close()
            finally:
                d.stop()

    asyncio.run(main())
