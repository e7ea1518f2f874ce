"""The JSON-RPC envelope level of the wire contract: error codes and both framings (LSP `Content-Length`
and newline-delimited JSON). Standard library only, so a one-shot client (`chatd call`, `chatd send`)
starts without msgspec; `chatd.protocol` re-exports all of it beside the method Structs and the codec.
"""

from __future__ import annotations

# ---------------------------------------------------------------- error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_CANCELLED = -32800
# chatd's own, in the JSON-RPC server range
CONVERSATION_NOT_FOUND = -32001
CONVERSATION_EXISTS = -32002
MODEL_NOT_FOUND = -32003
TURN_FAILED = -32004
LIMIT_EXCEEDED = -32005
SHUTTING_DOWN = -32006
STORAGE_ERROR = -32007


# ---------------------------------------------------------------- framing
MAX_FRAME = 16 * 1024 * 1024
"""Largest frame body accepted; a larger one is skipped unread and answered with an error."""
MAX_HEADER = 8 * 1024

def frame_lsp(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def frame_line(body: bytes) -> bytes:
    return body + b"\n"


class FrameError:
    """A framing failure (`message: str`). `fatal` means the stream cannot be resynchronised and must be
    closed. A plain class: a namedtuple would import `collections`, a NamedTuple `typing` (a one-shot
    client imports this module)."""

    __slots__ = ("message", "fatal")

    def __init__(self, message: str, fatal: bool) -> None:
        self.message, self.fatal = message, fatal

    def __repr__(self) -> str:
        return f"FrameError(message={self.message!r}, fatal={self.fatal!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is FrameError and (self.message, self.fatal) == (other.message, other.fatal)

    __hash__ = None  # type: ignore[assignment]


class FrameDecoder:
    """Incremental decoder for both framings; `feed()` returns complete bodies and FrameErrors.

    The framing is chosen by the first non-whitespace byte: `{` or `[` selects newline-delimited JSON,
    anything else the LSP `Content-Length` framing (unless `lsp_only`). Oversized frames are skipped
    without being buffered.
    """

    __slots__ = ("_buf", "_mode", "_need", "_skip", "_max")

    def __init__(self, *, lsp_only: bool = False, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._mode: str | None = "lsp" if lsp_only else None
        self._need = -1  # body bytes awaited in lsp mode, -1 while reading headers
        self._skip = 0  # bytes still to discard from an oversized frame
        self._max = max_frame

    @property
    def mode(self) -> str | None:
        return self._mode

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        out: list[bytes | FrameError] = []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip :]
            self._skip = 0
        self._buf += data
        if self._mode is None:
            stripped = self._buf.lstrip()
            if not stripped:
                self._buf.clear()
                return out
            del self._buf[: len(self._buf) - len(stripped)]  # whitespace before the first frame, however split
            self._mode = "line" if stripped[:1] in (b"{", b"[") else "lsp"
        if self._mode == "line":
            self._feed_lines(out)
        else:
            self._feed_lsp(out)
        return out

    def finish(self) -> list[bytes | FrameError]:
        """At end of input: a final newline-JSON line without its newline is still a message."""
        if self._mode == "line" and self._need != -2 and self._buf.strip():
            return self.feed(b"\n")
        return []

    def _feed_lines(self, out: list[bytes | FrameError]) -> None:
        buf = self._buf
        start = 0
        if self._need == -2:  # discarding the rest of an oversized line
            nl = buf.find(b"\n")
            if nl < 0:
                buf.clear()
                return
            start, self._need = nl + 1, -1
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            # The limit counts the raw line (not its newline), as the partial-line check below must.
            if nl - start > self._max:
                out.append(FrameError(f"line longer than {self._max} bytes", fatal=False))
            elif line := bytes(buf[start:nl]).strip():
                out.append(line)
            start = nl + 1
        del buf[:start]
        if len(buf) > self._max:
            out.append(FrameError(f"line longer than {self._max} bytes", fatal=False))
            buf.clear()
            self._need = -2

    def _feed_lsp(self, out: list[bytes | FrameError]) -> None:
        """Take every complete frame from the buffer: read at an offset, and cut what was read once at
        the end (cutting each frame off the front moved the rest of a pipelined read every time)."""
        buf = self._buf
        pos = 0
        try:
            while True:
                if self._need < 0:
                    end = buf.find(b"\r\n\r\n", pos)
                    if end < 0:
                        if len(buf) - pos > MAX_HEADER:
                            out.append(FrameError("header section too long or not LSP framing", fatal=True))
                            buf.clear()
                            pos = 0
                        return
                    digits = buf[pos + 16:end] if buf.startswith(_PLAIN_HEADER, pos) else b""
                    if digits.isdigit() and len(digits) <= _MAX_DIGITS:  # the usual header, alone
                        length: int | None = int(digits)
                    else:
                        length = _content_length(bytes(buf[pos:end]))
                    pos = end + 4
                    if length is None:
                        out.append(FrameError("bad or missing Content-Length header", fatal=True))
                        buf.clear()
                        pos = 0
                        return
                    if length > self._max:
                        out.append(FrameError(f"frame of {length} bytes exceeds the {self._max}-byte limit",
                                              fatal=False))
                        if len(buf) - pos >= length:
                            pos += length
                        else:
                            self._skip = length - (len(buf) - pos)
                            buf.clear()
                            pos = 0
                            return
                        continue
                    self._need = length
                if len(buf) - pos < self._need:
                    return
                out.append(bytes(buf[pos:pos + self._need]))
                pos += self._need
                self._need = -1
        finally:
            if pos:
                del buf[:pos]


_PLAIN_HEADER = b"Content-Length: "
_MAX_DIGITS = 15  # a longer length is no length (and `int` refuses strings of over 4,300 digits)


def _content_length(headers: bytes) -> int | None:
    length = None
    for line in headers.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            return None
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if not value.isdigit() or len(value) > _MAX_DIGITS:
                return None
            length = int(value)
    return length
