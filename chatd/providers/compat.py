"""The OpenAI-compatible family: each named server's base URL, key variable and dialect, and a cheap
async probe for local servers (Ollama, vLLM, llama.cpp, LM Studio) on their default ports.

Hosted servers speak Chat Completions with role "system" and `max_tokens`; quirks they share
(keepalive comments, `choices: null`, errors inside a 200 stream, tool calls without ids) are handled
by `openai_chat.ChatStream` for everyone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Iterable

import httpx

from chatd.providers.openai_chat import COMPAT, Dialect


NO_USAGE = Dialect(system_role="system", max_tokens_field="max_tokens", include_usage=False)


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    base_url: str
    key_env: str | None  # None: a local server that needs no key
    base_url_env: str | None = None
    dialect: Dialect = COMPAT

    @property
    def local(self) -> bool:
        return self.key_env is None


# Base URLs from each vendor's OpenAI-compatibility docs; GROQ_BASE_URL/TOGETHER_BASE_URL are their SDKs' own.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "GROQ_BASE_URL"),
    Family("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "TOGETHER_BASE_URL"),
    Family("fireworks", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    Family("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    # Mistral rejects unknown fields (so no stream_options; it sends usage anyway) and wants 9-char ids
    Family("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY",
           dialect=Dialect(system_role="system", max_tokens_field="max_tokens", include_usage=False,
                           tool_id_style="alnum9")),
    Family("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    Family("xai", "https://api.x.ai/v1", "XAI_API_KEY"),
    Family("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", dialect=NO_USAGE),
    # local servers, no key. Ollama and vLLM take stream_options; for the others a missing usage
    # chunk just means "usage unknown" (zeros), so ask for none rather than risk a 400.
    Family("ollama", "http://127.0.0.1:11434/v1", None),
    Family("vllm", "http://127.0.0.1:8000/v1", None),
    Family("llamacpp", "http://127.0.0.1:8080/v1", None, dialect=NO_USAGE),
    Family("lmstudio", "http://127.0.0.1:1234/v1", None, dialect=NO_USAGE),
)}


def ollama_base(host: str | None) -> str | None:
    """Ollama's own `OLLAMA_HOST` ("127.0.0.1:11434", "http://box:11434", ":11434") as a /v1 base URL."""
    if not host:
        return None
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = "http://" + (host if not host.startswith(":") else "127.0.0.1" + host)
    return host + "/v1"


async def probe_local(http: httpx.AsyncClient, bases: dict[str, str], *, timeout: float = 0.3
                      ) -> dict[str, list[str]]:
    """GET `<base>/models` on each local server at once; the model ids of those that answer.

    Cheap: one short request per server, all concurrent; a refused connection returns at once.
    Meant for `models/list` (cache the answer for a few seconds); not wired into the daemon here."""

    async def one(name: str, base: str) -> tuple[str, list[str]]:
        try:
            resp = await http.get(base.rstrip("/") + "/models", timeout=timeout)
            if resp.status_code != 200:
                return name, []
            data = resp.json().get("data") or []
            return name, [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
        except (httpx.HTTPError, ValueError, AttributeError, TypeError, KeyError):
            return name, []

    results = await asyncio.gather(*(one(n, b) for n, b in bases.items()))
    return {name: ids for name, ids in results if ids}


def local_bases(families: Iterable[Family] = FAMILIES.values()) -> dict[str, str]:
    return {f.name: f.base_url for f in families if f.local}
