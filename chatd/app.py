"""The composition root: builds store, registry, providers, router, service and hub, and runs them
behind a transport (the Unix socket daemon, or one stdio connection for `--standalone`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, Mapping

from chatd import protocol as p
from chatd.config import LazyHttpClient, load_config
from chatd.conversation import ConversationService
from chatd.models import ModelRegistry
from chatd.paths import Paths, ensure_private_dir
from chatd.providers import build_providers
from chatd.routing import Router, RouterConfig
from chatd.server import handlers
from chatd.server.hub import Hub
from chatd.server.listener import ConnectionProtocol, acquire_lock, bind_socket, open_stdio
from chatd.server.rpc import Connection
from chatd.store import Store
from chatd.tools import ToolRegistry
from chatd.tools.builtin import builtin_tools
from chatd.tools.sources import ToolSources

log = logging.getLogger("chatd")

LOCAL_PROBE_TTL = 5.0


class Daemon:
    def __init__(self, paths: Paths, *, seed: int | None = None, env: Mapping[str, str] | None = None) -> None:
        self.paths = paths
        self.started = time.monotonic()
        self.socket_path: str | None = None
        self.store = Store(paths.database, background_checkpoints=True)
        self.hub = Hub()
        # configuration: SDK environment variables + config.toml; problems are logged, never fatal
        self.env = os.environ if env is None else env
        self.config = load_config(paths, self.env)
        for warning in self.config.warnings:
            log.warning("config: %s", warning)
        self.registry = ModelRegistry()
        for spec in self.config.models:
            self.registry.add(spec)
        self.http = LazyHttpClient(self.config.http)  # one pool shared by every provider
        self.providers: dict[str, Any] = build_providers(self.config, self.http)
        self.tools = ToolRegistry()
        for tool in builtin_tools():
            self.tools.add(tool)
        self.tool_sources = ToolSources(self.tools)
        self._tools_loading: asyncio.Future[list[str]] | None = None
        routing, problems = RouterConfig.load(paths.config_file)  # the [routing] table of config.toml
        for warning in problems:
            log.warning("config: %s", warning)
        self.router = Router(seed, registry=self.registry, config=routing)  # one per daemon: shared cooldowns
        self.service = ConversationService(self.store, self.registry, self.providers, self.hub,
                                           router=self.router, default_models=self._default_models(),
                                           tools=self.tools, tool_rules=self.config.tools.policy,
                                           context=self.config.context)
        self.connections: set[Connection] = set()
        self._keys: dict[str, bool] | None = None
        self._probed_at = -LOCAL_PROBE_TTL
        self._stop = asyncio.Event()

    # ------------------------------------------------------------ connections
    def open_connection(self, transport: asyncio.BaseTransport, *, lsp_only: bool = False) -> Connection | None:
        if len(self.connections) >= self.config.limits.max_connections:
            log.warning("refused a connection: %d connections is the limit", len(self.connections))
            error = {"code": p.LIMIT_EXCEEDED, "message": "too many connections to chatd"}
            transport.write(p.frame_lsp(p.encode({"jsonrpc": "2.0", "id": None, "error": error})))  # type: ignore[attr-defined]
            transport.close()
            return None
        conn = Connection({}, self, lsp_only=lsp_only, limits=self.config.limits)
        conn.handlers = handlers.bind(conn)
        conn.attach(transport)  # type: ignore[arg-type]
        self.connections.add(conn)
        return conn

    def close_connection(self, conn: Connection) -> None:
        conn.close()
        self.connections.discard(conn)
        self.hub.drop(conn)
        self.tools.withdraw(conn)
        conn.protocol.cancel_all()

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ facts for handlers
    def _default_models(self) -> list[str]:
        """config.toml's `default-models` (the valid ones), else the first built-in model whose
        provider has a key, else the offline `echo`."""
        wanted = [m for m in self.config.default_models or () if m in self.registry]
        if wanted:
            return wanted
        keyed = {n for n, ep in self.config.endpoints.items() if ep.api_key is not None}
        first = next((s.name for s in self.registry.all() if s.provider in keyed), None)
        return [first] if first else ["echo"]

    def provider_keys(self) -> dict[str, bool]:
        """Provider name -> a key is present (or none is needed: local servers, echo). Never the key."""
        if self._keys is None:
            self._keys = {"echo": True, **{name: ep.usable for name, ep in self.config.endpoints.items()}}
        return self._keys

    async def discover_local_models(self) -> None:
        """Ask the keyless local servers (Ollama, vLLM, llama.cpp, LM Studio, on their configured or
        default ports) for their models, at most every LOCAL_PROBE_TTL seconds; each model found joins
        the registry as `<server>/<model id>`, usable like any other."""
        from chatd.providers.base import ModelSpec
        from chatd.providers.compat import probe_local

        now = time.monotonic()
        if now - self._probed_at < LOCAL_PROBE_TTL:
            return
        self._probed_at = now
        bases = {n: ep.base_url for n, ep in self.config.endpoints.items() if ep.local}
        found = await probe_local(self.http, bases)
        for server, ids in found.items():
            for model_id in ids:
                name = f"{server}/{model_id}"
                if name not in self.registry:
                    self.registry.add(ModelSpec(name=name, provider=server, api_model=model_id,
                                                capabilities=("streaming", "local")))

    def models_out(self) -> list[p.ModelOut]:
        keys = self.provider_keys()
        return [
            p.ModelOut(name=s.name, provider=s.provider, api_model=s.api_model, context_window=s.context_window,
                       max_output=s.max_output, input_price=s.input_price, output_price=s.output_price,
                       capabilities=list(s.capabilities), key_present=keys.get(s.provider, False),
                       cooldown_until=self.router.cooldown_until(s.name))
            for s in self.registry.all()
        ]

    # ------------------------------------------------------------ running
    # ------------------------------------------------------------ tools from the config
    def _load_tools(self) -> None:
        """Config functions and MCP servers load in the background: a slow MCP server never delays
        the socket. Turns and `tools/list` wait for it (`tools_loaded`)."""
        self._tools_loading = asyncio.ensure_future(self.tool_sources.reload(self.config.tools))

    async def tools_loaded(self) -> None:
        if self._tools_loading is not None and not self._tools_loading.done():
            await asyncio.wait_for(asyncio.shield(self._tools_loading), 60)

    async def reload(self) -> list[str]:
        """`daemon/reload`: re-read config.toml's tools and policy; returns its warnings."""
        from chatd.config import load_config

        config = load_config(self.paths, self.env)
        router_config, router_warnings = RouterConfig.load(self.paths.config_file)
        self.router.configure(router_config)
        self.config.tools = config.tools
        self.service.tool_rules = config.tools.policy
        self.service.context.settings = config.context  # [context]: strategy, summary model, budgets
        await self.tools_loaded()
        self._tools_loading = asyncio.ensure_future(self.tool_sources.reload(config.tools))
        errors = await self._tools_loading
        return [*config.warnings, *router_warnings, *errors]

    async def serve_unix(self, ready_fd: int | None = None, http: tuple[str, int] | None = None) -> None:
        lock_fd = acquire_lock(self.paths)
        try:
            sock = bind_socket(self.paths.socket)
            self.socket_path = self.paths.socket
            loop = asyncio.get_running_loop()
            server = await loop.create_unix_server(
                lambda: ConnectionProtocol(self.open_connection, self.close_connection, check_peer=True), sock=sock)
            face = await self._start_http(http, server) if http is not None else None
            log.info("serving on %s (pid %d)", self.paths.socket, os.getpid())
            self._install_signals()
            self._load_tools()
            self.service.start()  # fold what a dead process left
            if ready_fd is not None:
                os.write(ready_fd, b"ready\n")
                os.close(ready_fd)
            await self._stop.wait()
            if face is not None:
                await face.close()
            server.close()
            await self._shutdown()
            try:
                os.unlink(self.paths.socket)
            except FileNotFoundError:
                pass
        finally:
            os.close(lock_fd)  # released after the socket is gone

    async def _start_http(self, address: tuple[str, int], server: asyncio.AbstractServer) -> Any:
        """`serve --http`: the OpenAI-compatible face, a client of this daemon's own socket
        (chatd/faces/http.py says why). If its port is taken the daemon does not start."""
        from chatd.faces.http import HttpFace

        try:
            return await HttpFace.start(address, socket_path=self.paths.socket, runtime_dir=self.paths.runtime_dir)
        except OSError:
            server.close()
            os.unlink(self.paths.socket)
            raise

    async def serve_stdio(self) -> None:
        """One connection over stdin/stdout (LSP framing), engine in-process, on the same store."""
        proto = ConnectionProtocol(lambda t: None, lambda c: self.request_stop(), check_peer=False)
        writer = await open_stdio(proto)
        conn = self.open_connection(writer, lsp_only=True)
        proto.conn = conn
        closed = asyncio.ensure_future(conn.closed.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        self._install_signals()
        self._load_tools()
        self.service.start()  # fold what a dead process left
        await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        stop.cancel()
        await self._shutdown()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def _shutdown(self) -> None:
        log.info("shutting down: %d active turns", self.service.active_turns)
        await self.service.close()
        if self._tools_loading is not None:
            self._tools_loading.cancel()
        await self.tool_sources.close()
        await asyncio.sleep(0)  # let cancelled handlers send their -32800 replies
        for conn in list(self.connections):
            self.close_connection(conn)
        self.store.close()
        await self.http.aclose()


def setup_logging(paths: Paths, *, stderr: bool) -> None:
    ensure_private_dir(paths.log_dir)
    fd = os.open(paths.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    handler_list: list[logging.Handler] = [logging.StreamHandler(os.fdopen(fd, "a", buffering=1))]
    if stderr:
        handler_list.append(logging.StreamHandler())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    root = logging.getLogger("chatd")
    root.handlers.clear()
    for h in handler_list:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(os.environ.get("CHATD_LOG_LEVEL", "INFO").upper())
    root.propagate = False
