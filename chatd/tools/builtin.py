"""Built-in tools: the safe calculator, the date and time, and a read-only file reader and directory
lister confined to the workspace root the client names (no path, symlink or `..` escapes it)."""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chatd.toolschema import convert_arguments, schema_for
from chatd.tools import Tool, ToolContext, ToolError
from chatd.tools.calculator import CalculatorError, calculate

MAX_FILE_BYTES = 256 * 1024
MAX_ENTRIES = 1_000


def current_datetime(timezone: str | None = None) -> str:
    """The current date and time as ISO 8601, with the weekday.

    Args:
        timezone: An IANA zone such as "Europe/Paris"; the daemon's local zone if omitted.
    """
    try:
        now = _dt.datetime.now(ZoneInfo(timezone)) if timezone else _dt.datetime.now().astimezone()
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}") from None
    return f"{now.isoformat(timespec='seconds')} ({now.strftime('%A')})"


def _inside(workspace: str | None, path: str) -> str:
    if not workspace:
        raise ToolError("no workspace root: the client did not name one (initialize workspaceRoot"
                        " or chat/send workspace)")
    root = os.path.realpath(workspace)
    full = os.path.realpath(os.path.join(root, path))
    if full != root and not full.startswith(root + os.sep):
        raise ToolError(f"{path!r} is outside the workspace")
    return full


def read_file(path: str, start_line: int = 1, max_lines: int = 2000, *, _workspace: str | None = None) -> str:
    """Read a text file in the workspace.

    Args:
        path: Path relative to the workspace root.
        start_line: First line to return (1-based).
        max_lines: Most lines to return.
    """
    full = _inside(_workspace, path)
    if not os.path.isfile(full):
        raise ToolError(f"{path!r} is not a file in the workspace")
    with open(full, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if b"\0" in data[:8192]:
        raise ToolError(f"{path!r} looks binary")
    text = data[:MAX_FILE_BYTES].decode("utf-8", "replace")
    lines = text.splitlines()
    chosen = lines[max(start_line, 1) - 1: max(start_line, 1) - 1 + max(max_lines, 0)]
    note = "\n[truncated at 256 KiB]" if len(data) > MAX_FILE_BYTES else ""
    return "\n".join(chosen) + note


def list_directory(path: str = ".", *, _workspace: str | None = None) -> list[str]:
    """List a directory in the workspace (directories end with /).

    Args:
        path: Path relative to the workspace root.
    """
    full = _inside(_workspace, path)
    if not os.path.isdir(full):
        raise ToolError(f"{path!r} is not a directory in the workspace")
    entries = sorted(os.scandir(full), key=lambda e: e.name)[:MAX_ENTRIES]
    return [e.name + ("/" if e.is_dir() else "") for e in entries]


def _wrap(fn: Any, public: Any, *, workspace: bool = False) -> Any:
    async def run(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        try:
            kwargs = convert_arguments(public, arguments)
        except Exception as exc:
            raise ToolError(f"bad arguments: {exc}") from None
        if workspace:
            kwargs["_workspace"] = ctx.workspace
        try:
            return fn(**kwargs)
        except CalculatorError as exc:
            raise ToolError(str(exc)) from None

    return run


def _public(fn: Any) -> Any:
    """The signature the model sees: without the private `_workspace` keyword."""
    import functools
    import inspect

    sig = inspect.signature(fn)
    params = [prm for name, prm in sig.parameters.items() if not name.startswith("_")]

    @functools.wraps(fn)
    def shown(*a: Any, **k: Any) -> Any:
        return fn(*a, **k)

    shown.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return shown


def builtin_tools() -> list[Tool]:
    tools = []
    for fn, needs_ws in ((calculate, False), (current_datetime, False), (read_file, True),
                         (list_directory, True)):
        public = _public(fn)
        name, description, schema = schema_for(public)
        tools.append(Tool(name=name, description=description, parameters=schema, origin="builtin",
                          run=_wrap(fn, public, workspace=needs_ws)))
    return tools
