"""Configuration: SDK environment variables, config.toml additions, clear errors for typos, keys never shown;
the model registry; and a canary key that must never appear in an exception, a repr or a warning."""

from __future__ import annotations

import pickle
import sys

import pytest

from chatd import protocol as p
from chatd.config import Secret, load_config
from chatd.models import BUILTIN, ModelRegistry
from chatd.paths import resolve
from chatd.providers import build_providers
from chatd.providers.base import cost_of
from chatd.providers.openai_chat import OpenAIChatProvider
from fakes import FakeServer, Reply, fixture_events
from provider_helpers import client, collect, request, run

CANARY = "sk-CANARY-7f3a9c1e5b2d4f6a8c0e"


def paths_with(tmp_path, toml: str | None = None):
    paths = resolve({"CHATD_HOME": str(tmp_path)})
    if toml is not None:
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / "config.toml").write_text(toml)
    return paths


# ---------------------------------------------------------------- environment
def test_keys_and_base_urls_follow_the_sdk_variables(tmp_path):
    cfg = load_config(paths_with(tmp_path), {
        "OPENAI_API_KEY": "sk-openai-123456", "OPENAI_BASE_URL": "http://proxy/v1", "OPENAI_ORG_ID": "org-1",
        "ANTHROPIC_API_KEY": "sk-ant-123456", "GEMINI_API_KEY": "gem-123456789", "GOOGLE_API_KEY": "goog-123456789",
        "GROQ_API_KEY": "gsk-123456789", "OLLAMA_HOST": "10.0.0.5:11434", "MISTRAL_API_KEY": ""})
    ep = cfg.endpoints
    assert ep["openai"].base_url == "http://proxy/v1" and ep["openai"].api_key.reveal() == "sk-openai-123456"
    assert ep["openai"].headers == {"OpenAI-Organization": "org-1"}
    assert ep["anthropic"].base_url == "https://api.anthropic.com" and ep["anthropic"].usable
    assert ep["gemini"].api_key.reveal() == "goog-123456789" and ep["gemini"].key_source == "GOOGLE_API_KEY"
    assert ep["groq"].usable and not ep["mistral"].usable and not ep["together"].usable  # empty = unset
    assert ep["ollama"].base_url == "http://10.0.0.5:11434/v1" and ep["ollama"].usable and ep["ollama"].local
    assert cfg.warnings == []


def test_build_providers_makes_one_per_usable_endpoint(tmp_path):
    cfg = load_config(paths_with(tmp_path), {"OPENAI_API_KEY": "sk-openai-123456", "GROQ_API_KEY": "gsk-12345678"})
    provs = build_providers(cfg, None)  # type: ignore[arg-type]  # no request is made
    assert {"echo", "openai", "groq", "ollama", "vllm", "llamacpp", "lmstudio"} == set(provs)
    assert "anthropic" not in provs and provs["groq"].name == "groq"
    for spec in BUILTIN:
        assert spec.provider in cfg.endpoints or spec.provider == "echo"


# ---------------------------------------------------------------- config.toml
GOOD = """
default-models = ["qwen", "gpt-4o-mini"]

[http]
read-timeout = 60

[providers.gpu-box]
kind = "openai-compatible"
base-url = "http://gpu-box:8000/v1"
api-key-cmd = "{python} -c 'print(\\"sk-from-cmd-0123456789\\")'"

[providers.openai]
base-url = "https://gateway.example/v1"

[models.qwen-coder]
provider = "gpu-box"
api-model = "Qwen/Qwen2.5-Coder-32B-Instruct"
context-window = 32768
input-price = 0
capabilities = ["tools", "streaming"]
aliases = ["qwen"]

[models.gpt-4o]
output-price = 9.5
"""


def test_config_adds_endpoints_models_and_overrides(tmp_path):
    cfg = load_config(paths_with(tmp_path, GOOD.replace("{python}", sys.executable)), {})
    assert cfg.warnings == []
    box = cfg.endpoints["gpu-box"]
    assert box.kind == "openai-compatible" and box.api_key.reveal() == "sk-from-cmd-0123456789"
    assert box.key_source == "api-key-cmd" and box.dialect.system_role == "system"
    assert cfg.endpoints["openai"].base_url == "https://gateway.example/v1"
    assert cfg.default_models == ["qwen", "gpt-4o-mini"] and cfg.http.read_timeout == 60.0
    reg = ModelRegistry(BUILTIN)
    for spec in cfg.models:
        reg.add(spec)
    qwen = reg.get("qwen")
    assert (qwen.name, qwen.provider, qwen.context_window, qwen.capabilities) == (
        "qwen-coder", "gpu-box", 32768, ("tools", "streaming"))
    gpt4o = reg.get("gpt-4o")
    assert gpt4o.output_price == 9.5 and gpt4o.input_price == 2.50 and gpt4o.api_model == "gpt-4o"


def test_typos_name_the_key_and_line_and_the_rest_still_loads(tmp_path):
    toml = """default-model = ["x"]

[providers.gpu-box]
kind = "openai-compatible"
bse-url = "http://gpu-box:8000/v1"

[providers.other]
kind = "openai-compatible"
base-url = "http://other:1/v1"

[models.good]
provider = "other"
api-model = "m"

[models.bad]
provider = "other"
api-model = "m"
context-windw = 5

[models.orphan]
provider = "nowhere"
api-model = "m"
"""
    cfg = load_config(paths_with(tmp_path, toml), {})
    text = "\n".join(cfg.warnings)
    assert ":1: default-model: unknown key" in text
    assert ":5: providers.gpu-box.bse-url: unknown key" in text
    assert ":18: models.bad.context-windw: unknown key" in text
    assert "models.orphan.provider: no provider named 'nowhere'" in text
    assert "other" in cfg.endpoints and [m.name for m in cfg.models] == ["good"]


def test_syntax_error_names_the_line_and_the_daemon_keeps_env_config(tmp_path):
    cfg = load_config(paths_with(tmp_path, "[providers.x]\nkind = \n"), {"OPENAI_API_KEY": "sk-openai-123456"})
    assert len(cfg.warnings) == 1 and "line 2" in cfg.warnings[0] and "syntax error" in cfg.warnings[0]
    assert cfg.endpoints["openai"].usable


def test_failing_key_command_is_reported_without_its_output(tmp_path):
    toml = f"""[providers.openai]\napi-key-cmd = "{sys.executable} -c 'import sys; print(\\"{CANARY}\\"); sys.exit(3)'"\n"""
    cfg = load_config(paths_with(tmp_path, toml), {})
    assert len(cfg.warnings) == 1 and "status 3" in cfg.warnings[0] and ":2:" in cfg.warnings[0]
    assert CANARY not in cfg.warnings[0] and not cfg.endpoints["openai"].usable


# ---------------------------------------------------------------- canary key
def test_canary_key_never_in_reprs(tmp_path):
    cfg = load_config(paths_with(tmp_path, f'[providers.openai]\napi-key = "{CANARY}"\n'), {"GROQ_API_KEY": CANARY})
    assert CANARY not in repr(cfg) and CANARY not in str(cfg.endpoints) and CANARY not in repr(Secret(CANARY))
    assert CANARY not in f"{Secret(CANARY)}" and CANARY not in repr(build_providers(cfg, None))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pickle.dumps(Secret(CANARY))


def test_canary_key_never_in_exception_messages():
    """A server that echoes the key back (as Gemini does in some errors) and every failure path."""
    def echo_key(req):
        return Reply.json(401, {"error": {"message": f"Incorrect API key provided: {req.headers['authorization']}"}})

    async def main():
        errors = []
        async with FakeServer(echo_key) as srv, client() as http:
            errors.append((await collect(OpenAIChatProvider(http, base_url=srv.url, api_key=CANARY), request()))[1])
        async with FakeServer(Reply(chunks=[b'data: {"error": {"message": "bad key ' + CANARY.encode() + b'"}}\n\n'])
                              ) as srv, client() as http:
            errors.append((await collect(OpenAIChatProvider(http, base_url=srv.url, api_key=CANARY), request()))[1])
        async with FakeServer(Reply(chunks=fixture_events("openai_chat_text_stream.txt"), drop_after=2)) as srv, \
                client() as http:
            errors.append((await collect(OpenAIChatProvider(http, base_url=srv.url, api_key=CANARY), request()))[1])
        return errors
    errors = run(main())
    assert errors[0].kind == "auth" and "[redacted]" in errors[0].message
    for err in errors:
        assert err is not None
        assert CANARY not in str(err) and CANARY not in repr(err) and CANARY not in repr(err.args)


# ---------------------------------------------------------------- registry
def test_registry_has_the_seed_names_and_current_models():
    reg = ModelRegistry()
    for name in ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "claude-4-sonnet", "gemini-2.0-flash", "llama-3.3-70b", "echo",
                 "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "gpt-5", "gpt-5-mini", "claude-sonnet-4.5",
                 "claude-opus-4.1", "claude-haiku-4.5", "gemini-2.5-pro", "gemini-2.5-flash"):
        spec = reg.get(name)
        assert spec.context_window > 0 and spec.max_output > 0
        if name != "echo":
            assert spec.input_price > 0 and spec.output_price > 0 and 0 < spec.cached_input_price <= spec.input_price
            assert "streaming" in spec.capabilities and "tools" in spec.capabilities
    assert reg.get("claude-sonnet-4").name == "claude-4-sonnet" and reg.get("offline").name == "echo"
    assert reg.get("gpt-5").options == {"api": "responses"} and reg.get("gpt-4o").options == {}
    names = [s.name for s in reg.all()]
    aliases = [a for s in reg.all() for a in s.aliases]
    assert len(set(names + aliases)) == len(names) + len(aliases)


def test_cost_counts_cached_input_at_the_cached_price():
    spec = ModelRegistry().get("gpt-4.1")
    usage = p.Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=400_000)
    assert cost_of(spec, usage) == pytest.approx(0.6 * 2.00 + 0.4 * 0.50 + 8.00)
