"""OpenAI chat completions <-> chatd: a request body becomes a `chat/send`, bound to a conversation or
stateless (the request's messages as its history, nothing stored), and the answer goes back as one `chat.completion` or a stream of
`chat.completion.chunk` server-sent events ending in `data: [DONE]` (the shapes the `openai` SDK parses)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from chatd import protocol as p
from chatd_client.aio import AsyncClient, RpcError

_STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                405: "Method Not Allowed", 413: "Content Too Large", 429: "Too Many Requests",
                431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
                502: "Bad Gateway", 503: "Service Unavailable"}
_HTTP_STATUS = {p.INVALID_PARAMS: 400, p.MODEL_NOT_FOUND: 404, p.CONVERSATION_NOT_FOUND: 404,
                p.CONVERSATION_EXISTS: 400, p.TURN_FAILED: 502, p.LIMIT_EXCEEDED: 429, p.SHUTTING_DOWN: 503,
                p.REQUEST_CANCELLED: 503}
_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}
DEFAULT_MODEL = "chatd"  # the face's alias for "let chatd route" (the conversation's or the daemon's models)


class HttpError(Exception):
    """An HTTP error answered in OpenAI's error shape, which the SDK turns into its exception classes."""

    def __init__(self, status: int, message: str, code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}


def from_rpc(code: int, message: str) -> HttpError:
    status = _HTTP_STATUS.get(code, 500)
    name = {p.MODEL_NOT_FOUND: "model_not_found", p.CONVERSATION_NOT_FOUND: "conversation_not_found"}.get(code)
    return HttpError(status, message, name, "invalid_request_error" if status < 500 else "api_error")


def head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Status')}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_response(status: int, obj: Any, keep_alive: bool, extra: list[tuple[str, str]] | None = None) -> bytes:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
               ("Connection", "keep-alive" if keep_alive else "close"), *(extra or [])]
    return head(status, headers) + body


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        out = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise HttpError(400, f"{where}: content parts of type {kind!r} are not supported (text only)")
            out.append(str(part.get("text", "")))
        return "".join(out)
    raise HttpError(400, f"{where}.content must be a string or a list of parts")


def _usage(u: dict[str, Any] | None) -> dict[str, Any]:
    u = u or {}
    inp, out = u.get("inputTokens", 0), u.get("outputTokens", 0)
    return {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
            "prompt_tokens_details": {"cached_tokens": u.get("cachedTokens", 0)},
            "completion_tokens_details": {"reasoning_tokens": u.get("reasoningTokens", 0)}}


@dataclass
class Answer:
    text: str
    model: str
    usage: dict[str, Any]
    finish: str
    extra: dict[str, Any] = field(default_factory=dict)


class _Sse:
    """A `text/event-stream` response in HTTP/1.1 chunked encoding (so the connection can be reused)."""

    def __init__(self, writer: asyncio.StreamWriter, keep_alive: bool, cid: str, model: str) -> None:
        self.writer, self.keep_alive, self.id, self.model = writer, keep_alive, cid, model
        self.created = int(time.time())
        self.started = self.has_text = False

    def start(self) -> None:
        self.started = True
        self.writer.write(head(200, [("Content-Type", "text/event-stream; charset=utf-8"),
                                     ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                                     ("Transfer-Encoding", "chunked"),
                                     ("Connection", "keep-alive" if self.keep_alive else "close")]))
        self.chunk({"role": "assistant", "content": ""})

    def _write(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    def event(self, obj: Any) -> None:
        self._write(b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        self.has_text = self.has_text or bool(delta.get("content"))
        self.event({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "system_fingerprint": None,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra})

    def finish(self, answer: Answer, include_usage: bool) -> None:
        self.model = answer.model
        self.chunk({}, _FINISH.get(answer.finish, "stop"))
        if include_usage:
            self.event({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "system_fingerprint": None, "choices": [], "usage": _usage(answer.usage)})
        self.end()

    def end(self, done: bool = True) -> None:
        if done:
            self._write(b"data: [DONE]\n\n")
        self.writer.write(b"0\r\n\r\n")


@dataclass
class Completion:
    """One parsed `POST /v1/chat/completions` body."""

    model: str
    models: list[str] | None
    conversation: str | None
    system: str | None
    turns: list[tuple[str, str]]
    stream: bool = False
    include_usage: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    tools: list[str] | None = None

    @classmethod
    def parse(cls, body: Any, conversation: str | None) -> "Completion":
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HttpError(400, "messages must be a non-empty list")
        if body.get("tools") or body.get("functions"):
            raise HttpError(400, "OpenAI function tools are not supported here: chatd runs its own tools "
                                 "(`chatd_tools`, on a bound conversation)")
        if body.get("n") not in (None, 1):
            raise HttpError(400, "n must be 1")
        system: list[str] = []
        turns: list[tuple[str, str]] = []
        for i, msg in enumerate(messages):
            role = msg.get("role") if isinstance(msg, dict) else None
            if role in ("system", "developer"):
                system.append(_text(msg.get("content"), f"messages[{i}]"))
            elif role in ("user", "assistant") and not msg.get("tool_calls"):
                turns.append((role, _text(msg.get("content"), f"messages[{i}]")))
            else:
                raise HttpError(400, f"messages[{i}]: role {role!r} (or tool calls) is not supported")
        if not turns or turns[-1][0] != "user":
            raise HttpError(400, "the last message must be the user's")
        model = body.get("model") or DEFAULT_MODEL
        if not isinstance(model, str):
            raise HttpError(400, "model must be a string")
        options: dict[str, Any] = {}
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None:
            options["maxNewTokens"] = limit
        if body.get("temperature") is not None:
            options["temperature"] = body["temperature"]
        conversation = conversation or body.get("chatd_conversation")
        tools = body.get("chatd_tools")
        if tools is not None and (not conversation or not isinstance(tools, list)):
            raise HttpError(400, "chatd_tools is a list of tool names, for a bound conversation "
                                 "(chatd-conversation header)")
        return cls(model=model, models=None if model == DEFAULT_MODEL else [model], conversation=conversation,
                   system="\n\n".join(system) if system else None, turns=turns, stream=bool(body.get("stream")),
                   include_usage=bool((body.get("stream_options") or {}).get("include_usage")), options=options,
                   tools=tools)

    async def run(self, client: AsyncClient, writer: asyncio.StreamWriter, keep_alive: bool) -> bool:
        """Answer on `writer`; returns whether the connection may be reused."""
        cid = "chatcmpl-" + uuid.uuid4().hex
        if self.stream:
            return await self._stream(client, writer, keep_alive, cid)
        answer = await self._send(client)
        writer.write(json_response(200, {
            "id": cid, "object": "chat.completion", "created": int(time.time()), "model": answer.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text, "refusal": None},
                         "logprobs": None, "finish_reason": _FINISH.get(answer.finish, "stop")}],
            "usage": _usage(answer.usage), **answer.extra}, keep_alive))
        return keep_alive

    async def _send_params(self, client: AsyncClient) -> dict[str, Any]:
        """A `chat/send`: on the bound conversation (chatd keeps the history; only the last user message
        is sent), or stateless (no conversation: the request's messages are the history, nothing stored)."""
        send: dict[str, Any] = {"text": self.turns[-1][1], **self.options}
        if self.conversation is None:
            send["history"] = [{"role": r, "parts": [{"type": "text", "text": t}]} for r, t in self.turns[:-1]]
            if self.system is not None:
                send["system"] = self.system
        else:
            if self.system is not None:  # a new conversation takes the request's system prompt
                try:
                    await client.request(p.CONVERSATION_CREATE, {"name": self.conversation, "system": self.system})
                except RpcError as exc:
                    if exc.code != p.CONVERSATION_EXISTS:
                        raise
            send["conversation"] = self.conversation
        if self.models:
            send["models"] = self.models
        if self.tools:
            send["tools"] = self.tools
        return send

    async def _send(self, client: AsyncClient) -> Answer:
        r = await client.request(p.CHAT_SEND, await self._send_params(client))
        return Answer(r["message"]["text"], r["modelUsed"], r["usage"], r.get("finishReason") or "stop",
                      {"chatd": {"conversation": r["conversation"], "turnId": r["turnId"], "cost": r["cost"]}})

    async def _stream(self, client: AsyncClient, writer: asyncio.StreamWriter, keep_alive: bool,
                      cid: str) -> bool:
        """Deltas go out as they arrive. The response starts with the first delta, so a turn refused
        before any text still gets a real HTTP error status."""
        send = await self._send_params(client)
        sse = _Sse(writer, keep_alive, cid, self.model)
        msg_id, future = client.start_request(p.CHAT_SEND, send)
        voided: list[str] = []

        def on_note(method: str, params: Any) -> None:
            if method == p.CHAT_TURN_STARTED:
                sse.model = params["model"]
            elif method == p.CHAT_DELTA and not voided:
                if writer.is_closing():  # the HTTP client went away: stop the turn (as OpenAI's API does)
                    voided.append("the HTTP client disconnected")
                    client.notify(p.CANCEL_REQUEST, {"id": msg_id})
                    return
                if not sse.started:
                    sse.start()
                sse.chunk({"content": params["text"]})
            elif method == p.CHAT_ATTEMPT and sse.has_text and not voided:
                # chatd restarts the reply on another try; text already sent cannot be taken back
                voided.append(f"{params['model']} failed mid-reply ({params.get('reason')}); the turn was "
                              "cancelled because streamed text cannot be retracted; retry the request")
                client.notify(p.CANCEL_REQUEST, {"id": msg_id})

        client.on_notification = on_note
        reply = await future
        if "error" in reply:
            err = reply["error"] or {}
            if not sse.started:
                raise from_rpc(err.get("code", p.INTERNAL_ERROR), voided[0] if voided else err.get("message", ""))
            failure = from_rpc(err.get("code", p.INTERNAL_ERROR), voided[0] if voided else err.get("message", ""))
            sse.event(failure.body())
            sse.end(done=False)
            return False
        r = reply["result"]
        if not sse.started:
            sse.start()
        sse.finish(Answer(r["message"]["text"], r["modelUsed"], r["usage"], r.get("finishReason") or "stop"),
                   self.include_usage)
        return keep_alive
