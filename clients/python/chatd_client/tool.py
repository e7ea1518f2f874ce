"""`Tool`: a Python function the model may call, run in this process when the daemon asks (`tool/invoke`).

`Tool.from_function(fn)` takes the name, description and JSON Schema from `chatd.toolschema.schema_for`,
the same code the daemon uses for config-named functions, so a function has one schema wherever it is
declared; `call()` converts the model's JSON arguments with `convert_arguments` (enums, dataclasses...).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from chatd import protocol as p


class Tool:
    """A client tool: `name`, `description`, `parameters` (JSON Schema) and the function that runs it."""

    __slots__ = ("name", "description", "parameters", "run", "side_effects", "timeout_s")

    def __init__(self, name: str, run: Callable[..., Any], description: str = "",
                 parameters: dict[str, Any] | None = None, *, side_effects: bool = False,
                 timeout_s: float = 60.0) -> None:
        self.name = name
        self.run = run
        self.description = description
        self.parameters = parameters or {"type": "object", "properties": {}, "required": []}
        self.side_effects = side_effects  # the daemon's policy asks the user before running these
        self.timeout_s = timeout_s

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                      side_effects: bool = False, timeout_s: float = 60.0) -> "Tool":
        from chatd.toolschema import schema_for

        fn_name, summary, schema = schema_for(fn)
        return cls(name or fn_name, fn, summary if description is None else description, schema,
                   side_effects=side_effects, timeout_s=timeout_s)

    def declaration(self) -> dict[str, Any]:
        """The `tools/register` entry for this tool."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters,
                "sideEffects": self.side_effects, "timeoutS": self.timeout_s}

    def call(self, **arguments: Any) -> Any:
        """Run the function (sync only; `acall` also awaits coroutine functions)."""
        return self.run(**self._convert(arguments))

    async def acall(self, **arguments: Any) -> Any:
        result = self.run(**self._convert(arguments))
        if inspect.isawaitable(result):
            result = await result
        return result

    def _convert(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if not inspect.isfunction(self.run) and not inspect.ismethod(self.run):
            return arguments
        from chatd.toolschema import convert_arguments

        return convert_arguments(self.run, arguments)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tool) and self.declaration() == other.declaration() and self.run is other.run

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


def as_tool(tool: "Tool | Callable[..., Any] | str") -> "Tool | str":
    """A Tool, a plain function (made a Tool), or a string: the name of a daemon-side tool (built-in,
    config or MCP, e.g. "read_file"), offered to the model but run by the daemon."""
    if isinstance(tool, (Tool, str)):
        return tool
    if callable(tool):
        return Tool.from_function(tool)
    raise TypeError(f"a tool is a Tool, a function or a daemon tool's name, not {type(tool).__name__}")


def result_for_wire(value: Any) -> Any:
    """What a tool returned, as JSON the daemon can store (anything else becomes its str)."""
    try:
        p.encode(value)
        return value
    except TypeError:
        return str(value)
