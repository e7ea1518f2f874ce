"""JSON Schema for a tool from a Python function's signature and docstring.

Pure (stdlib + msgspec), so both the daemon (config-named functions) and the Python client
(`Tool.from_function`) build identical schemas. msgspec generates the type schemas (Optional, Literal,
enums, lists, dicts, dataclasses, Structs, TypedDicts); this module adds defaults, required-ness and
per-argument descriptions from the docstring's `Args:` section (Google style; `:param x:` also works).
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any, Callable

import msgspec

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SPHINX = re.compile(r"^\s*:param\s+(?:[^:]+\s+)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(summary, {argument: description}) from a Google- or Sphinx-style docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    i = 0
    while i < len(lines) and not _ARGS_HEADER.match(lines[i]) and not _SPHINX.match(lines[i]) \
            and not (summary_lines and _SECTION.match(lines[i])):
        summary_lines.append(lines[i])
        i += 1
    current: str | None = None
    in_args = False
    for line in lines[i:]:
        if _ARGS_HEADER.match(line):
            in_args, current = True, None
            continue
        sphinx = _SPHINX.match(line)
        if sphinx:
            current = sphinx.group(1)
            args[current] = sphinx.group(2).strip()
            continue
        if in_args and _SECTION.match(line) and not line.startswith((" ", "\t")):
            in_args, current = False, None
            continue
        if in_args:
            m = _ARG_LINE.match(line)
            if m and (len(line) - len(line.lstrip())) <= 4 and m.group(1).lstrip("*").isidentifier():
                current = m.group(1).lstrip("*")
                args[current] = m.group(3).strip()
            elif current and line.strip():
                args[current] = (args[current] + " " + line.strip()).strip()
    summary = " ".join(" ".join(summary_lines).split())
    return summary, args


def _args_struct(fn: Callable[..., Any], *, strict: bool) -> type[msgspec.Struct]:
    """A Struct type whose fields are `fn`'s parameters, with their annotations and defaults."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = {}
    fields: list[Any] = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, Any)
        fields.append((name, annotation) if param.default is inspect.Parameter.empty
                      else (name, annotation, param.default))
    return msgspec.defstruct(f"{fn.__name__}_args", fields, kw_only=True, forbid_unknown_fields=strict)


def schema_for(fn: Callable[..., Any]) -> tuple[str, str, dict[str, Any]]:
    """(name, description, parameters JSON Schema) for `fn`."""
    summary, arg_docs = parse_docstring(inspect.getdoc(fn))
    struct = _args_struct(fn, strict=False)
    _, components = msgspec.json.schema_components([struct], ref_template="#/$defs/{name}")
    schema = dict(components.pop(struct.__name__))
    schema.pop("title", None)
    schema["type"] = "object"
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    for name, prop in schema["properties"].items():
        if arg_docs.get(name):
            prop["description"] = arg_docs[name]
    if components:
        schema["$defs"] = components
    schema["additionalProperties"] = False
    return fn.__name__, summary, schema


def convert_arguments(fn: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate and convert JSON arguments to the function's types (enums, Structs, dataclasses...).

    Raises msgspec.ValidationError with a message naming the argument."""
    struct = _args_struct(fn, strict=True)
    value = msgspec.convert(arguments, struct)
    return {f: getattr(value, f) for f in struct.__struct_fields__}
