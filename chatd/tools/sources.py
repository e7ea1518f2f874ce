"""Tools from the configuration: Python functions named `module:function`, and MCP servers.

`ToolsConfig` is what config.toml's `[tools]` table holds; `load_functions` imports the functions and
builds their schemas from signatures and docstrings; `ToolSources.reload` (re)applies the whole table
to a registry: on daemon start and on `daemon/reload`.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from typing import Any

import msgspec

from chatd.toolschema import convert_arguments, schema_for
from chatd.tools import Tool, ToolContext, ToolError, ToolRegistry
from chatd.tools.mcp import McpServer
from chatd.tools.policy import Rule

log = logging.getLogger("chatd.tools")


class McpServerConfig(msgspec.Struct, rename="kebab", forbid_unknown_fields=True):
    command: list[str]
    env: dict[str, str] = {}
    cwd: str | None = None
    call_timeout: float = 120.0


class ToolsConfig(msgspec.Struct, rename="kebab", forbid_unknown_fields=True):
    """config.toml:

        [tools]
        functions = ["mytools:get_weather"]      # module:function, importable by the daemon
        side-effects = ["mytools:send_mail"]     # those of them that change things (asked before running)
        approval-timeout = 120
        policy = [{tool = "read_file", action = "allow"},
                  {tool = "run_*", arguments = "rm -rf", action = "deny"}]

        [tools.mcp.files]
        command = ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/home/me/notes"]
    """

    functions: list[str] = []
    side_effects: list[str] = []
    policy: list[Rule] = []
    approval_timeout: float = 120.0
    mcp: dict[str, McpServerConfig] = {}


def load_functions(specs: list[str], side_effects: list[str]) -> tuple[list[Tool], list[str]]:
    """(tools, errors): each `module:function` imported afresh; a bad entry is an error line, not a crash."""
    tools, errors = [], []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            module = importlib.reload(module)
            fn = getattr(module, attr)
            name, description, schema = schema_for(fn)
        except Exception as exc:
            errors.append(f"tools.functions: cannot load {spec!r}: {type(exc).__name__}: {exc}")
            continue
        tools.append(Tool(name=name, description=description, parameters=schema, origin="config",
                          run=_function_runner(fn), side_effects=spec in side_effects))
    return tools, errors


def _function_runner(fn: Any):
    async def run(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        try:
            kwargs = convert_arguments(fn, arguments)
        except msgspec.ValidationError as exc:
            raise ToolError(f"bad arguments: {exc}") from None
        if inspect.iscoroutinefunction(fn):
            return await fn(**kwargs)
        return await asyncio.to_thread(fn, **kwargs)  # a slow function must not stall the daemon

    return run


class ToolSources:
    """Applies a ToolsConfig to the registry and owns the MCP server processes."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry
        self.servers: dict[str, McpServer] = {}

    async def reload(self, config: ToolsConfig) -> list[str]:
        """Replace config functions and MCP servers with what `config` names; returns error lines."""
        self.registry.remove_origin("config")
        tools, errors = load_functions(config.functions, config.side_effects)
        for tool in tools:
            self.registry.add(tool)
        await self.close()
        for name, server_cfg in config.mcp.items():
            server = McpServer(name, server_cfg.command, env=server_cfg.env, cwd=server_cfg.cwd,
                               call_timeout=server_cfg.call_timeout)
            self.servers[name] = server
            try:
                for tool in await server.start():
                    self.registry.add(tool)
            except ToolError as exc:
                errors.append(f"tools.mcp.{name}: {exc}")
        for line in errors:
            log.warning("%s", line)
        return errors

    async def close(self) -> None:
        for name, server in self.servers.items():
            self.registry.remove_origin(server.origin)
            await server.close()
        self.servers.clear()
