"""Configuration: provider endpoints and keys from the official SDKs' environment variables, plus
`<config dir>/config.toml` (kebab-case keys) that adds endpoints and models and may name an `api-key-cmd`.

`load_config(paths, env)` never raises for a bad file: each problem becomes one line in
`Config.warnings` naming the key (and the line), and everything valid is still used. Keys live in
`Secret`, whose repr and str never show them; only `build_providers` calls `reveal()`.

    default-models = ["gpt-4.1-mini", "claude-4-sonnet"]

    [http]
    connect-timeout = 10        # seconds
    read-timeout = 300          # seconds between bytes of a stream
    transport = "aiohttp"       # or "httpx" (its own pool: slower at many concurrent streams)

    [providers.openai]          # override a built-in endpoint
    api-key-cmd = "pass show openai"

    [providers.gpu-box]         # a new endpoint
    kind = "openai-compatible"  # openai | anthropic | gemini | openai-compatible
    base-url = "http://gpu-box:8000/v1"
    api-key-env = "GPU_BOX_KEY" # optional

    [models.qwen-coder]         # a new model (or, under a built-in name, an override)
    provider = "gpu-box"
    api-model = "Qwen/Qwen2.5-Coder-32B-Instruct"
    context-window = 32768
    capabilities = ["tools"]
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import tomllib

import msgspec
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import httpx

from chatd.models import BUILTIN
from chatd.tools.sources import ToolsConfig
from chatd.context import ContextSettings
from chatd.providers.base import ModelSpec
from chatd.providers.compat import FAMILIES, Family, ollama_base
from chatd.providers.openai_chat import COMPAT, Dialect

KINDS = ("openai", "anthropic", "gemini", "openai-compatible")


class Secret:
    """An API key. Its repr and str are redacted; `reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('[redacted]')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not picklable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True)
class Endpoint:
    """One provider endpoint: what `build_providers` turns into a provider object."""

    name: str
    kind: str  # one of KINDS
    base_url: str
    api_key: Secret | None = None
    key_source: str | None = None  # where the key came from (variable name or "api-key-cmd"), never the key
    local: bool = False  # a keyless local server
    headers: dict[str, str] = field(default_factory=dict)
    dialect: Dialect | None = None  # openai-compatible only

    @property
    def usable(self) -> bool:
        """A key is present, or none is needed."""
        return self.api_key is not None or self.local


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    write_timeout: float = 30.0
    pool_timeout: float = 30.0
    transport: str = "aiohttp"  # "aiohttp" (providers/aiohttp_transport.py) or "httpx" (httpx's own pool)


def make_http_client(settings: HttpSettings) -> httpx.AsyncClient:
    """The one client every provider shares: httpx over chatd's aiohttp transport by default
    (providers/aiohttp_transport.py: at 1,000 concurrent streams httpx's own pool was several times
    slower, bench/providers_transport.py, encode/httpx#3215), or httpx's own pool with `transport = "httpx"`."""
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout, write=settings.write_timeout,
                            pool=settings.pool_timeout)
    # no connection cap: with aiohttp's default of 100 the 101st concurrent stream would queue
    # (bench T4: 20.3 s -> 3.8 s for 1,000 streams)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100, keepalive_expiry=60)
    if settings.transport == "aiohttp":
        from chatd.providers.aiohttp_transport import AiohttpTransport

        return httpx.AsyncClient(timeout=timeout, transport=AiohttpTransport(limits))
    return httpx.AsyncClient(timeout=timeout, limits=limits)


class Limits(msgspec.Struct, rename="kebab", forbid_unknown_fields=True):
    """config.toml `[limits]`: what one client may take of the daemon."""

    max_connections: int = 256
    max_turns_per_connection: int = 16  # chat/send requests in flight on one connection
    output_high_water: int = 1 << 20  # bytes unread by a client before its deltas are coalesced
    output_hard_cap: int = 16 << 20  # bytes unread before the connection is closed
    stuck_client_timeout: float = 30.0  # seconds a client may stay above the high-water mark


class LazyHttpClient:
    """The shared client, built on first use: a daemon that only talks to `echo` never loads aiohttp
    (~13 MB of its idle RSS). Providers use it as an httpx.AsyncClient: `get()`, and `headers`, `timeout`
    and `_transport_for_url()` (providers/transport.py sends straight to the client's transport)."""

    def __init__(self, settings: HttpSettings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_http_client(self._settings)
        return self._client

    async def get(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return await self.client.get(*args, **kwargs)

    @property
    def headers(self) -> httpx.Headers:
        return self.client.headers

    @property
    def timeout(self) -> httpx.Timeout:
        return self.client.timeout

    def _transport_for_url(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        return self.client._transport_for_url(url)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


@dataclass
class Config:
    endpoints: dict[str, Endpoint]
    models: list[ModelSpec]  # from config.toml: new models and overrides of built-in ones
    default_models: list[str] | None = None
    http: HttpSettings = field(default_factory=HttpSettings)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    context: ContextSettings = field(default_factory=ContextSettings)  # [context]: chatd/context.py
    limits: Limits = field(default_factory=Limits)
    warnings: list[str] = field(default_factory=list)

    def secrets(self) -> list[str]:
        """Every key, for scrubbing log lines and messages."""
        return [e.api_key.reveal() for e in self.endpoints.values() if e.api_key is not None]


# ---------------------------------------------------------------- environment
def _env(env: Mapping[str, str], *names: str) -> tuple[str | None, str | None]:
    """The first non-empty variable of `names`: (value, name)."""
    for name in names:
        value = (env.get(name) or "").strip()
        if value:
            return value, name
    return None, None


def _key(env: Mapping[str, str], *names: str) -> tuple[Secret | None, str | None]:
    value, name = _env(env, *names)
    return (Secret(value), name) if value else (None, None)


def env_endpoints(env: Mapping[str, str]) -> dict[str, Endpoint]:
    """The built-in endpoints, with keys and base URLs from the variables each official SDK reads."""
    out: dict[str, Endpoint] = {}
    key, src = _key(env, "OPENAI_API_KEY")
    headers = {}
    if (org := _env(env, "OPENAI_ORG_ID")[0]):
        headers["OpenAI-Organization"] = org
    if (project := _env(env, "OPENAI_PROJECT_ID")[0]):
        headers["OpenAI-Project"] = project
    out["openai"] = Endpoint("openai", "openai", _env(env, "OPENAI_BASE_URL")[0] or "https://api.openai.com/v1",
                             key, src, headers=headers)
    key, src = _key(env, "ANTHROPIC_API_KEY")
    out["anthropic"] = Endpoint("anthropic", "anthropic",
                                _env(env, "ANTHROPIC_BASE_URL")[0] or "https://api.anthropic.com", key, src)
    key, src = _key(env, "GOOGLE_API_KEY", "GEMINI_API_KEY")  # google-genai prefers GOOGLE_API_KEY
    out["gemini"] = Endpoint("gemini", "gemini", _env(env, "GOOGLE_GEMINI_BASE_URL")[0]
                             or "https://generativelanguage.googleapis.com", key, src)
    for fam in FAMILIES.values():
        out[fam.name] = _family_endpoint(fam, env)
    return out


def _family_endpoint(fam: Family, env: Mapping[str, str]) -> Endpoint:
    base = _env(env, fam.base_url_env)[0] if fam.base_url_env else None
    if fam.name == "ollama":
        base = ollama_base(_env(env, "OLLAMA_HOST")[0])
    key, src = _key(env, fam.key_env) if fam.key_env else (None, None)
    return Endpoint(fam.name, "openai-compatible", base or fam.base_url, key, src, local=fam.local,
                    dialect=fam.dialect)


# ---------------------------------------------------------------- config.toml
_TOP = {"default-models", "http", "providers", "models", "tools", "routing", "context", "limits"}  # [routing]: RouterConfig.load
_HTTP = {"connect-timeout": "connect_timeout", "read-timeout": "read_timeout", "write-timeout": "write_timeout",
         "pool-timeout": "pool_timeout", "transport": "transport"}
_PROVIDER = {"kind", "base-url", "api-key", "api-key-env", "api-key-cmd", "headers", "system-role",
             "max-tokens-field", "include-usage"}
_MODEL = {"provider": str, "api-model": str, "context-window": int, "max-output": int, "input-price": float,
          "output-price": float, "cached-input-price": float, "capabilities": list, "aliases": list,
          "api": str, "options": dict}

KeyCommand = Callable[[str], str]


def run_key_command(cmd: str, timeout: float = 10.0) -> str:
    """Run `api-key-cmd` (no shell) and return its first output line; errors never include output."""
    try:
        done = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"could not run it ({type(err).__name__})") from None
    if done.returncode != 0:
        raise RuntimeError(f"it exited with status {done.returncode}")
    line = done.stdout.strip().splitlines()[0].strip() if done.stdout.strip() else ""
    if not line:
        raise RuntimeError("it printed nothing")
    return line


class _Lines:
    """Find the line of a key in the TOML text, for messages (tomllib gives no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def of(self, table: tuple[str, ...], key: str | None) -> int | None:
        start = 0
        if table:
            header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(rf'"?{re.escape(t)}"?' for t in table) + r"\s*\]")
            start = next((i for i, ln in enumerate(self.lines) if header.match(ln)), -1)
            if start < 0:
                dotted = re.compile(r"^\s*" + r"\s*\.\s*".join(rf'"?{re.escape(t)}"?' for t in table))
                start = next((i for i, ln in enumerate(self.lines) if dotted.match(ln)), -1)
                if start < 0:
                    return None
                if key is None:
                    return start + 1
            if key is None:
                return start + 1
            start += 1
        pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
        for i in range(start, len(self.lines)):
            if pattern.match(self.lines[i]):
                return i + 1
            if table and self.lines[i].lstrip().startswith("["):
                break
        return None


def load_config(paths: Any, env: Mapping[str, str] | None = None, *,
                key_command: KeyCommand = run_key_command) -> Config:
    """Endpoints from `env` (default `os.environ`), then `paths.config_file` on top of them."""
    env = os.environ if env is None else env
    config = Config(endpoints=env_endpoints(env), models=[])
    path = getattr(paths, "config_file", None) or str(paths)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return config
    except OSError as err:
        config.warnings.append(f"{path}: cannot read ({err.strerror})")
        return config
    text = raw.decode("utf-8", "replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        config.warnings.append(f"{path}: syntax error: {err}; the file is ignored")
        return config
    _Apply(config, path, _Lines(text), env, key_command).top(data)
    return config


class _Apply:
    def __init__(self, config: Config, path: str, lines: _Lines, env: Mapping[str, str], key_command: KeyCommand):
        self.config, self.path, self.lines, self.env, self.key_command = config, path, lines, env, key_command

    def warn(self, table: tuple[str, ...], key: str | None, message: str) -> None:
        line = self.lines.of(table, key)
        where = ".".join((*table, key) if key else table)
        self.config.warnings.append(f"{self.path}{f':{line}' if line else ''}: {where}: {message}")

    def top(self, data: dict[str, Any]) -> None:
        for key in data:
            if key not in _TOP:
                self.warn((), key, f"unknown key (known: {', '.join(sorted(_TOP))})")
        if "default-models" in data:
            value = data["default-models"]
            if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
                self.config.default_models = value
            else:
                self.warn((), "default-models", "must be a non-empty list of model names")
        self.http(data.get("http"))
        self.tools(data.get("tools"))
        self.context(data.get("context"))
        self.limits(data.get("limits"))
        providers = data.get("providers", {})
        if isinstance(providers, dict):
            for name, table in providers.items():
                self.provider(name, table)
        else:
            self.warn((), "providers", "must be a table of [providers.<name>]")
        models = data.get("models", {})
        if isinstance(models, dict):
            for name, table in models.items():
                self.model(name, table)
        else:
            self.warn((), "models", "must be a table of [models.<name>]")

    def tools(self, table: Any) -> None:
        self._struct_table("tools", table, ToolsConfig)

    def limits(self, table: Any) -> None:
        self._struct_table("limits", table, Limits)

    def _struct_table(self, name: str, table: Any, struct: type) -> None:
        """A table converted whole to a Struct; on a bad value, a warning naming it, and the defaults."""
        if table is None:
            return
        try:
            setattr(self.config, name, msgspec.convert(table, struct))
        except msgspec.ValidationError as err:
            path = str(err).rpartition("at `$")[2].rstrip("`").strip(".").replace("[", ".").replace("]", "")
            keys = tuple(k for k in path.split(".") if k)
            self.warn((name, *keys[:-1]), keys[-1] if keys else None, f"{err}; [{name}] is ignored")

    def context(self, table: Any) -> None:
        """[context]: window fitting, summaries and budgets; a bad value warns and keeps the defaults."""
        if table is None:
            return
        try:
            self.config.context = msgspec.convert(table, ContextSettings)
        except msgspec.ValidationError as err:
            path = str(err).rpartition("at `$")[2].rstrip("`").strip(".").replace("[", ".").replace("]", "")
            keys = tuple(k for k in path.split(".") if k)
            self.warn(("context", *keys[:-1]), keys[-1] if keys else None, f"{err}; [context] is ignored")

    def http(self, table: Any) -> None:
        if table is None:
            return
        if not isinstance(table, dict):
            self.warn((), "http", "must be a table")
            return
        values = {}
        for key, value in table.items():
            attr = _HTTP.get(key)
            if attr is None:
                self.warn(("http",), key, f"unknown key (known: {', '.join(_HTTP)})")
            elif attr == "transport":
                if value in ("aiohttp", "httpx"):
                    values[attr] = value
                else:
                    self.warn(("http",), key, 'must be "aiohttp" or "httpx"')
            elif not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                self.warn(("http",), key, "must be a positive number of seconds")
            else:
                values[attr] = float(value)
        self.config.http = HttpSettings(**{**self.config.http.__dict__, **values})

    def provider(self, name: str, table: Any) -> None:
        where = ("providers", name)
        if not isinstance(table, dict):
            self.warn(where, None, "must be a table")
            return
        bad = [k for k in table if k not in _PROVIDER]
        for key in bad:
            self.warn(where, key, f"unknown key (known: {', '.join(sorted(_PROVIDER))})")
        base = self.config.endpoints.get(name)
        kind = table.get("kind", base.kind if base else None)
        if kind not in KINDS:
            self.warn(where, "kind" if "kind" in table else None,
                      f"kind must be one of {', '.join(KINDS)}" + ("" if "kind" in table else " (a new provider needs one)"))
            return
        url = table.get("base-url", base.base_url if base and base.kind == kind else None)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            self.warn(where, "base-url" if "base-url" in table else None, "base-url must be an http(s) URL")
            return
        key, source = (base.api_key, base.key_source) if base else (None, None)
        for field_name in ("api-key", "api-key-env", "api-key-cmd"):
            value = table.get(field_name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                self.warn(where, field_name, "must be a non-empty string")
                continue
            if field_name == "api-key":
                key, source = Secret(value.strip()), "config.toml"
            elif field_name == "api-key-env":
                key, source = _key(self.env, value.strip())
                if key is None:
                    self.warn(where, field_name, f"variable {value.strip()} is not set")
            else:
                try:
                    key, source = Secret(self.key_command(value)), "api-key-cmd"
                except RuntimeError as err:
                    self.warn(where, field_name, f"command failed: {err}")
        headers = dict(base.headers) if base else {}
        if "headers" in table:
            if isinstance(table["headers"], dict) and all(isinstance(v, str) for v in table["headers"].values()):
                headers.update(table["headers"])
            else:
                self.warn(where, "headers", "must be a table of strings")
        dialect = base.dialect if base and base.dialect else (COMPAT if kind == "openai-compatible" else None)
        if kind == "openai-compatible":
            dialect = self.dialect(where, table, dialect or COMPAT)
        local = base.local if base else (key is None and url.startswith(("http://127.", "http://localhost")))
        self.config.endpoints[name] = Endpoint(name, kind, url, key, source, local=local, headers=headers,
                                               dialect=dialect)

    def dialect(self, where: tuple[str, ...], table: dict[str, Any], d: Dialect) -> Dialect:
        changes: dict[str, Any] = {}
        if "system-role" in table:
            if table["system-role"] in ("system", "developer"):
                changes["system_role"] = table["system-role"]
            else:
                self.warn(where, "system-role", 'must be "system" or "developer"')
        if "max-tokens-field" in table:
            if table["max-tokens-field"] in ("max_tokens", "max_completion_tokens"):
                changes["max_tokens_field"] = table["max-tokens-field"]
            else:
                self.warn(where, "max-tokens-field", 'must be "max_tokens" or "max_completion_tokens"')
        if "include-usage" in table:
            if isinstance(table["include-usage"], bool):
                changes["include_usage"] = table["include-usage"]
            else:
                self.warn(where, "include-usage", "must be true or false")
        return dataclasses.replace(d, **changes) if changes else d

    def model(self, name: str, table: Any) -> None:
        where = ("models", name)
        if not isinstance(table, dict):
            self.warn(where, None, "must be a table")
            return
        builtin = next((s for s in BUILTIN if s.name == name), None)
        fields: dict[str, Any] = {}
        ok = True
        for key, value in table.items():
            want = _MODEL.get(key)
            if want is None:
                self.warn(where, key, f"unknown key (known: {', '.join(_MODEL)})")
                ok = False
                continue
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or isinstance(value, bool) or (want is list and not all(
                    isinstance(v, str) for v in value)):
                self.warn(where, key, f"must be {'a list of strings' if want is list else want.__name__}")
                ok = False
                continue
            fields[key] = value
        if not ok:
            self.config.warnings.append(f"{self.path}: model {name!r} skipped until fixed")
            return
        options = dict(builtin.options) if builtin else {}
        options.update(fields.pop("options", {}))
        if "api" in fields:
            options["api"] = fields.pop("api")
        if builtin is None and ("provider" not in fields or "api-model" not in fields):
            self.warn(where, None, "a new model needs provider and api-model")
            return
        provider = fields.get("provider", builtin.provider if builtin else "")
        if provider not in self.config.endpoints and provider != "echo":
            self.warn(where, "provider", f"no provider named {provider!r} (built-in: "
                      f"{', '.join(sorted(self.config.endpoints))}, or add [providers.{provider}])")
            return
        values = {k.replace("-", "_"): v for k, v in fields.items()}
        for k in ("capabilities", "aliases"):
            if k in values:
                values[k] = tuple(values[k])
        values["api_model"] = values.pop("api_model", builtin.api_model if builtin else name)
        spec = ModelSpec(name=name, **{**_spec_fields(builtin), **values, "options": options})
        self.config.models.append(spec)


def _spec_fields(spec: ModelSpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    return {f: getattr(spec, f) for f in spec.__struct_fields__ if f != "name"}
