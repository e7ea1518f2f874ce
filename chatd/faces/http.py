"""The OpenAI-compatible HTTP face: `chatd serve --http 127.0.0.1:PORT` (off by default).

Serves `POST /v1/chat/completions` (streamed as `chat.completion.chunk` server-sent events ending in
`data: [DONE]`, or one `chat.completion`) and `GET /v1/models`, for tools that already speak OpenAI's API.

Design: the face runs inside the daemon process but is a *client* of the daemon's own Unix socket
(`chatd_client.AsyncClient`, one connection per HTTP request). That is the thinner honest design: it
reuses the public protocol exactly as every other client does (routing, fallback, tools, approval,
subscriptions, conversation/changed for watchers), needs no second entry point into the engine and no
fake connection object, and an HTTP request is isolated from every other one by its own connection.
The extra hop costs ~0.2 ms per request, nothing beside a model call.

- Bound: a `chatd-conversation: NAME` header (or a `chatd_conversation` body field) makes the request
  that conversation's next turn (`chat/send`): chatd keeps the history, so only the last message (the
  user's) is used; a system message creates the conversation with that system prompt if it is new.
  `chatd_tools` (registry names or globs) offers chatd's tools to that turn.
- Stateless otherwise: a stateless `chat/send` with the request's transcript as its history; nothing is
  stored, so the user's conversation list is not littered, and a streamed request streams as it comes.
- Security: binds loopback addresses only (and checks each peer); every request needs
  `Authorization: Bearer <token>` with the token from `<runtime dir>/http.token` (0600, generated once);
  a request with an `Origin` other than the face's own, or a `Host` that is not loopback (DNS
  rebinding), is refused with 403; no CORS headers are ever sent, so browsers cannot read replies.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import secrets
from typing import Any

from chatd import protocol as p
from chatd.faces.completions import DEFAULT_MODEL, Completion, HttpError, from_rpc, json_response
from chatd_client.aio import AsyncClient, RpcError

log = logging.getLogger("chatd.http")

TOKEN_FILE = "http.token"
URL_FILE = "http.url"
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
_LOOPBACK_NAMES = {"localhost", "localhost."}


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port); only loopback hosts are accepted. Port 0
    picks a free port (its URL is written to `<runtime dir>/http.url`)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8787")
    if not _is_loopback(host):
        raise ValueError(f"{host!r} is not a loopback address: the HTTP face listens on loopback only")
    return host.strip("[]"), int(port)


def load_token(runtime_dir: str) -> str:
    """The face's bearer token: read from `<runtime dir>/http.token` if it is ours and private, else a
    new one written there 0600 (so clients configured once keep working across daemon restarts)."""
    path = os.path.join(runtime_dir, TOKEN_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            token = f.read().strip()
        if st.st_uid == os.getuid() and not st.st_mode & 0o077 and len(token) >= 32:
            return token
    except OSError:
        pass
    token = "chatd-" + secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token


def _write_private(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Request:
    __slots__ = ("method", "path", "version", "headers", "body")

    def __init__(self, method: str, path: str, version: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.version, self.headers, self.body = method, path, version, headers, body

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return "close" not in conn if self.version == "HTTP/1.1" else "keep-alive" in conn


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One HTTP/1.1 request (Content-Length bodies only); None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError(400, "incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "only HTTP/1.1 is spoken here")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        name = name.lower()
        if name in headers and name in ("content-length", "authorization", "host", "origin"):
            raise HttpError(400, f"duplicate {name} header")
        headers[name] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked request bodies are not supported; send Content-Length")
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise HttpError(400, "bad Content-Length")
    if int(length) > MAX_BODY:
        raise HttpError(413, f"request body over {MAX_BODY} bytes")
    body = await reader.readexactly(int(length)) if int(length) else b""
    return Request(method, target.split("?", 1)[0], version, headers, body)


class HttpFace:
    def __init__(self, host: str, socket_path: str, token: str) -> None:
        self.host, self.socket_path, self.token = host, socket_path, token
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    async def start(cls, address: tuple[str, int], *, socket_path: str, runtime_dir: str) -> "HttpFace":
        host, port = address
        face = cls(host, socket_path, load_token(runtime_dir))
        try:
            face.server = await asyncio.start_server(face._connection, host, port, limit=MAX_HEAD, reuse_address=True)
        except OSError as exc:
            exc.http_face = True  # type: ignore[attr-defined]  # so `serve` names the HTTP address, not the socket
            raise
        face.port = face.server.sockets[0].getsockname()[1]
        _write_private(os.path.join(runtime_dir, URL_FILE), face.url + "\n")
        log.info("HTTP face on %s", face.url)
        return face

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------ connections
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            peer = writer.get_extra_info("peername")
            if not peer or not _is_loopback(str(peer[0])):
                return
            while True:
                try:
                    req = await read_request(reader)
                except HttpError as exc:
                    writer.write(json_response(exc.status, exc.body(), False))
                    return
                if req is None:
                    return
                try:
                    keep = await self._dispatch(req, writer)
                except HttpError as exc:
                    writer.write(json_response(exc.status, exc.body(), req.keep_alive, _auth_header(exc)))
                    keep = req.keep_alive
                except (ConnectionError, asyncio.IncompleteReadError):
                    raise
                except Exception:
                    log.exception("HTTP face: %s %s failed", req.method, req.path)
                    failure = HttpError(500, "internal error (see the daemon log)", kind="api_error")
                    writer.write(json_response(500, failure.body(), False))
                    keep = False
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def _check(self, req: Request) -> None:
        """Origin and Host first (browsers' cross-site requests and DNS rebinding), then the token."""
        origin = req.headers.get("origin")
        if origin is not None and origin != self.url:
            raise HttpError(403, "cross-origin requests are refused (the HTTP face sends no CORS headers)",
                            "forbidden_origin")
        host = req.headers.get("host", "")
        if not _is_loopback(host.rsplit(":", 1)[0] if not host.endswith("]") else host):
            raise HttpError(403, "the Host header must name a loopback address", "forbidden_host")
        scheme, _, given = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HttpError(401, "missing or wrong bearer token (see <runtime dir>/chatd/http.token)",
                            "invalid_api_key")

    async def _dispatch(self, req: Request, writer: asyncio.StreamWriter) -> bool:
        self._check(req)
        path = req.path.rstrip("/")
        if path == "/v1/chat/completions":
            if req.method != "POST":
                raise HttpError(405, "use POST")
            return await self._completions(req, writer)
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if req.method != "GET":
                raise HttpError(405, "use GET")
            models = await self._models()
            if path == "/v1/models":
                writer.write(json_response(200, {"object": "list", "data": models}, req.keep_alive))
                return req.keep_alive
            wanted = path[len("/v1/models/"):]
            found = next((m for m in models if m["id"] == wanted), None)
            if found is None:
                raise HttpError(404, f"no model named {wanted!r}", "model_not_found")
            writer.write(json_response(200, found, req.keep_alive))
            return req.keep_alive
        raise HttpError(404, f"no route {req.method} {req.path}")

    async def _daemon(self) -> AsyncClient:
        try:
            return await AsyncClient.connect(self.socket_path)
        except OSError as exc:
            raise HttpError(503, f"the daemon is not reachable: {exc}", kind="api_error") from None

    async def _models(self) -> list[dict[str, Any]]:
        client = await self._daemon()
        try:
            models = (await client.request(p.MODELS_LIST))["models"]
        finally:
            await client.close()
        alias = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "chatd"}
        return [alias, *({"id": m["name"], "object": "model", "created": 0, "owned_by": m["provider"]}
                         for m in models)]

    # ------------------------------------------------------------ chat completions
    async def _completions(self, req: Request, writer: asyncio.StreamWriter) -> bool:
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            raise HttpError(400, "the body is not JSON") from None
        completion = Completion.parse(body, req.headers.get("chatd-conversation"))
        client = await self._daemon()
        try:
            return await completion.run(client, writer, req.keep_alive)
        except RpcError as exc:
            raise from_rpc(exc.code, exc.message) from None
        finally:
            await client.close()


def _auth_header(exc: HttpError) -> list[tuple[str, str]]:
    return [("WWW-Authenticate", 'Bearer realm="chatd"')] if exc.status == 401 else []

