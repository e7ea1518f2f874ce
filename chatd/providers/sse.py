"""Server-sent events parsed from raw byte chunks (no line iterators: they cost ~10x per chunk).

`SSEParser.feed(chunk)` returns the complete events in the chunk: (event name or None, data string).
Comments (`: keepalive`) and `id:`/`retry:` fields are dropped; multi-line `data:` fields are joined
with newlines; CRLF, CR and LF line ends are all accepted, per the WHATWG spec.
"""

from __future__ import annotations


class SSEParser:
    __slots__ = ("_buf", "_event", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # a CR may be the first half of CRLF: wait for the next chunk
                self._buf = buf
                return []
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[tuple[str | None, str]] = []
        start = 0
        find = buf.find
        while True:
            end = find(b"\n", start)
            if end < 0:
                break
            line = buf[start:end]
            start = end + 1
            if not line:
                if self._data:
                    out.append((self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line[:1] == b":":
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
        self._buf = buf[start:]
        return out

    def flush(self) -> list[tuple[str | None, str]]:
        """At end of stream: an event without its blank line is still delivered."""
        out = self.feed(b"\n\n") if self._buf or self._data else []
        return out
