"""The tool registry: every tool a model may call, from four sources, with its schema and origin.

Sources: `builtin` (calculator, date/time, workspace file reader and lister), `config` (Python
functions named in config.toml), `client` (registered by a connected client, run in that client),
and `mcp:<server>` (MCP servers over stdio). Tools run only when registered; what runs them is the
`run` callable each source supplies, so the registry knows nothing of sockets or subprocesses.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Awaitable, Callable

import msgspec

from chatd import protocol as p


class ToolContext(msgspec.Struct):
    conversation: str
    turn_id: str
    call_id: str
    workspace: str | None = None


Runner = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


class Tool(msgspec.Struct):
    name: str
    description: str
    parameters: dict[str, Any]
    origin: str
    run: Runner
    side_effects: bool = False
    owner: Any = None  # the client connection, for client tools
    timeout_s: float = 60.0


class ToolError(Exception):
    """A tool failed in a way the model should hear about (it becomes an error result, not a crash)."""


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[tuple[str, int], Tool] = {}  # (name, id(owner) or 0)

    def add(self, tool: Tool) -> None:
        self._tools[(tool.name, id(tool.owner) if tool.owner is not None else 0)] = tool

    def remove(self, name: str, owner: Any = None) -> bool:
        return self._tools.pop((name, id(owner) if owner is not None else 0), None) is not None

    def remove_origin(self, origin: str) -> None:
        for key in [k for k, t in self._tools.items() if t.origin == origin]:
            del self._tools[key]

    def withdraw(self, owner: Any) -> list[str]:
        """A client went away: drop its tools; returns their names."""
        keys = [k for k, t in self._tools.items() if t.owner is owner]
        for key in keys:
            del self._tools[key]
        return [name for name, _ in keys]

    def all(self) -> list[Tool]:
        return sorted(self._tools.values(), key=lambda t: (t.name, t.origin))

    def resolve(self, names: list[str], origin: Any) -> list[Tool]:
        """The tools a turn from `origin` may call: its own client tools first, then shared ones, then
        other clients'. `*` (or a glob) selects every visible match."""
        visible: dict[str, Tool] = {}
        for tool in sorted(self._tools.values(), key=lambda t: _rank(t, origin)):
            visible.setdefault(tool.name, tool)
        chosen: dict[str, Tool] = {}
        for pattern in names:
            matches = [t for n, t in visible.items() if fnmatch.fnmatchcase(n, pattern)]
            if not matches:
                from chatd.errors import InvalidArgument

                raise InvalidArgument(f"no tool named {pattern!r} is registered (see tools/list)")
            for tool in matches:
                chosen.setdefault(tool.name, tool)
        return list(chosen.values())


def _rank(tool: Tool, origin: Any) -> int:
    if tool.owner is not None and tool.owner is origin:
        return 0
    return 1 if tool.owner is None else 2


def describe(tool: Tool) -> p.ToolInfo:
    return p.ToolInfo(name=tool.name, description=tool.description, parameters=tool.parameters,
                      origin=tool.origin, side_effects=tool.side_effects)
