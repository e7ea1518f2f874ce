"""JSON through the standard library's C codec (`_json`) without importing `json`.

`import json` also imports `re` (and `re` imports `enum`): ~8 ms of a ~25 ms one-shot `chatd call`.
The one-shot clients (`chatd call`, `chatd send`, the blocking `chatd_client.Client`) code JSON here
instead: the same C scanner and encoder `json` itself uses, so the same results. Anything `_json`
rejects goes to `json` after all, for its exact error (a `json.JSONDecodeError`, a ValueError).
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

_SPACE = " \t\n\r"


class _Context:
    """What `_json.make_scanner` reads from a `json.JSONDecoder`: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity, as json.loads accepts them


_scan = _json.make_scanner(_Context())


def loads(data: bytes | str) -> Any:
    text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _scan(text, start)
    except (StopIteration, ValueError):
        value, end = None, -1
    if end < 0 or text[end:].strip(_SPACE):
        import json

        return json.loads(text)  # raises json.JSONDecodeError, with json's own message
    return value


def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder(default: Callable[[Any], Any] | None) -> Callable[[Any, int], tuple[str, ...]]:
    # the arguments of json.JSONEncoder.iterencode's C path: markers, default, string encoder, indent,
    # key separator, item separator, sort_keys, skipkeys, allow_nan
    return _json.make_encoder({}, default or _no_default, _json.encode_basestring, None, ":", ",",
                              False, False, True)


_compact = _encoder(None)
_with_default: dict[Callable[[Any], Any], Callable[[Any, int], tuple[str, ...]]] = {}


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)`."""
    if default is None:
        return "".join(_compact(value, 0))
    encode = _with_default.get(default)
    if encode is None:  # one encoder per `default` function (the blocking client passes the same one each time)
        encode = _with_default[default] = _encoder(default)
    return "".join(encode(value, 0))


def dumps_pretty(value: Any) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=False)`: what `chatd call` prints."""
    out: list[str] = []
    _pretty(value, "\n", out)
    return "".join(out)


def _pretty(value: Any, newline: str, out: list[str]) -> None:
    if isinstance(value, dict) and value:
        inner = newline + "  "
        out.append("{")
        sep = inner
        for key, item in value.items():
            out += (sep, _json.encode_basestring(key if isinstance(key, str) else _compact(key, 0)[0]), ": ")
            _pretty(item, inner, out)
            sep = "," + inner
        out += (newline, "}")
    elif isinstance(value, (list, tuple)) and value:
        inner = newline + "  "
        out.append("[")
        sep = inner
        for item in value:
            out.append(sep)
            _pretty(item, inner, out)
            sep = "," + inner
        out += (newline, "]")
    else:
        out += _compact(value, 0)
