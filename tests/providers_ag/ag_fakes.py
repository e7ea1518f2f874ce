"""Fake Anthropic and Gemini servers on 127.0.0.1 that replay the recorded wire fixtures byte for byte.

A `FakeServer` is a real HTTP/1.1 server on a real socket (a thread, so the official SDKs' synchronous
clients can use it too). Each request takes the next scripted `Reply` (the last one repeats) and is
recorded (method, path, headers, JSON body), so a test can compare what chatd sent with what an SDK sent.
Streams go out with chunked transfer encoding, one HTTP chunk per piece, so SSE framing is split exactly
as the reply says.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

WIRE = Path("/work/shared/wire")


# ---------------------------------------------------------------- fixtures
def _sections(name: str) -> list[bytes]:
    """The non-comment sections of a wire file, in order, bytes exactly as recorded (CRLF kept)."""
    out: list[bytes] = []
    current: list[bytes] = []
    for line in (WIRE / name).read_bytes().splitlines(keepends=True):
        if line.startswith(b"#"):
            if b"".join(current).strip():
                out.append(b"".join(current))
            current = []
        else:
            current.append(line)
    if b"".join(current).strip():
        out.append(b"".join(current))
    return out


def sse_fixture(name: str, section: int = 0) -> bytes:
    """An SSE stream from a wire file: leading blank lines dropped; the last event closed by a blank line
    (the Anthropic files end right after the last `data:` line)."""
    body = _sections(name)[section].lstrip(b"\r\n")
    body = body.rstrip(b"\r\n") + (b"\r\n\r\n" if b"\r\n" in body else b"\n\n")
    return body


def json_fixtures(name: str) -> list[Any]:
    """Every top-level JSON value in a wire file's non-comment text, in order."""
    text = b"".join(_sections(name)).decode()
    decoder, out, i = json.JSONDecoder(), [], 0
    while True:
        start = min((j for j in (text.find("{", i), text.find("[", i)) if j >= 0), default=-1)
        if start < 0:
            return out
        try:
            value, i = decoder.raw_decode(text, start)
            out.append(value)
        except json.JSONDecodeError:
            i = start + 1


def split_events(stream: bytes) -> list[bytes]:
    """One piece per SSE event (each with its blank line)."""
    sep = b"\r\n\r\n" if b"\r\n\r\n" in stream else b"\n\n"
    return [piece + sep for piece in stream.split(sep) if piece.strip()]


def split_every(stream: bytes, size: int) -> list[bytes]:
    return [stream[i:i + size] for i in range(0, len(stream), size)]


# ---------------------------------------------------------------- the server
@dataclass
class Reply:
    status: int = 200
    pieces: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    drop: bool = False  # close the socket after the pieces, without ending the chunked body
    stall: bool = False  # send the pieces, then hang until the server stops

    @classmethod
    def sse(cls, stream: bytes, *, per_event: bool = True, **kw: Any) -> "Reply":
        return cls(pieces=split_events(stream) if per_event else [stream], **kw)

    @classmethod
    def json(cls, status: int, body: Any, headers: dict[str, str] | None = None) -> "Reply":
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return cls(status=status, pieces=[raw], headers={"content-type": "application/json", **(headers or {})})


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeServer:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                fake.seen.append(Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                fake._serve(self, fake._next())

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client hanging up on a dropped or stalled reply is the point of those replies

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> "FakeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *replies: Reply) -> "FakeServer":
        with self._lock:
            self.replies = list(replies)
            self.seen.clear()
        return self

    def _next(self) -> Reply:
        with self._lock:
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def _serve(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        h.send_response(reply.status)
        for name, value in reply.headers.items():
            h.send_header(name, value)
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        for piece in reply.pieces:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            h.wfile.flush()
        if reply.stall:
            self._stop.wait(30)
        if reply.drop or reply.stall:
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
