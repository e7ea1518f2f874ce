"""`chatd acp`: an Agent Client Protocol agent on stdio, translating ACP to chatd's protocol.

Like `chatd stdio` it attaches to the user's shared daemon, so an ACP session is a chatd conversation
(the session id *is* the conversation name) that every other client sees live, and the other way round.
ACP is newline-delimited JSON-RPC 2.0 on stdin/stdout (protocol version 1, field names as in the
official schema). The mapping:

    initialize            -> capabilities (loadSession, sessionCapabilities.list)
    session/new           -> conversation/create (a fresh name) + conversation/subscribe
    session/load          -> conversation/subscribe; its messages (and a turn still streaming) are
                             replayed as session/update before the reply
    session/list          -> conversation/list (dot-named helper conversations are hidden)
    session/prompt        -> chat/send {tools, workspace: cwd}; the reply's finishReason -> stopReason
    session/cancel        -> $/cancelRequest for that prompt's chat/send (never another client's turn)
    chat/delta            -> session/update agent_message_chunk
    chat/toolCall         -> session/update tool_call (status pending)
    chat/toolResult       -> session/update tool_call_update (completed | failed)
    chat/turnStarted      -> user_message_chunk, for turns other clients started
    chat/attempt          -> agent_thought_chunk (a retry or fallback, visible)
    tool/approve (daemon) -> session/request_permission (allow_once / reject_once)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from chatd import protocol as p
from chatd_client.aio import AsyncClient, RpcError

log = logging.getLogger("chatd.acp")

ACP_VERSION = 1
RESOURCE_NOT_FOUND = -32002  # ACP's code for an unknown session
MAX_LINE = p.MAX_FRAME
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "max_rounds": "max_turn_requests",
                 "content_filter": "refusal", "refusal": "refusal"}
_PERMISSION_OPTIONS = [{"optionId": "allow", "name": "Allow", "kind": "allow_once"},
                       {"optionId": "reject", "name": "Reject", "kind": "reject_once"}]


class AcpError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


@dataclass
class _Session:
    id: str  # the ACP session id: the conversation's name when the session was opened
    conversation: str
    cwd: str | None
    prompts: deque[str] = field(default_factory=deque)  # texts of our chat/sends not yet started
    own_turns: set[str] = field(default_factory=set)
    sending: set[int] = field(default_factory=set)  # ids of our chat/send requests in flight


def tool_kind(name: str) -> str:
    """ACP's ToolKind from a tool's name (a hint for the client's icon, nothing more)."""
    low = name.lower()
    for words, kind in ((("read", "get_file", "cat"), "read"), (("write", "edit", "patch", "replace"), "edit"),
                        (("delete", "remove"), "delete"), (("list", "search", "find", "grep", "glob"), "search"),
                        (("fetch", "http", "url"), "fetch"), (("exec", "run", "shell", "command"), "execute")):
        if any(w in low for w in words):
            return kind
    return "think" if "think" in low else "other"


def tool_title(name: str, arguments: Any) -> str:
    args = json.dumps(arguments, ensure_ascii=False, separators=(",", ":")) if arguments else ""
    return f"{name}({args[:77] + '...' if len(args) > 80 else args})" if args else name


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def prompt_text(blocks: list[Any]) -> str:
    """ACP content blocks -> the user's text. Resources travel as their text, links as links."""
    out: list[str] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            out.append(block.get("text", ""))
        elif kind == "resource_link":
            out.append(f"\n[{block.get('name') or block.get('uri')}]({block.get('uri')})\n")
        elif kind == "resource":
            res = block.get("resource") or {}
            if "text" not in res:
                raise AcpError(p.INVALID_PARAMS, "binary resources are not supported (promptCapabilities)")
            out.append(f"\n{res.get('uri', '')}\n```\n{res['text']}\n```\n")
        else:
            raise AcpError(p.INVALID_PARAMS, f"content blocks of type {kind!r} are not supported")
    return "".join(out).strip("\n") if len(blocks) > 1 else "".join(out)


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


class AcpAgent:
    """One ACP client (the editor) on one side, one daemon connection on the other."""

    def __init__(self, daemon: AsyncClient, write: Callable[[dict[str, Any]], None], *,
                 tools: list[str] | None = None, models: list[str] | None = None) -> None:
        self.daemon, self._write = daemon, write
        self.tools, self.models = tools or [], models
        self.sessions: dict[str, _Session] = {}
        self._by_conv: dict[str, _Session] = {}
        self._ids = iter(range(1, 1 << 62))
        self._pending: dict[Any, asyncio.Future[Any]] = {}  # our requests to the editor
        daemon.on_notification = self._on_daemon_note
        daemon.request_handlers[p.TOOL_APPROVE] = self._approve

    # ------------------------------------------------------------ editor -> agent
    async def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return self._reply(None, error=AcpError(p.INVALID_REQUEST, "not a JSON-RPC message"))
        if "method" not in msg:  # a reply to one of our requests
            future = self._pending.pop(msg.get("id"), None)
            if future is not None and not future.done():
                future.set_result(msg)
            return
        method, params, msg_id = msg["method"], msg.get("params") or {}, msg.get("id")
        handler = self._methods().get(method)
        if "id" not in msg:  # a notification
            if method == "session/cancel":
                self._cancel(params)
            return
        if handler is None:
            return self._reply(msg_id, error=AcpError(p.METHOD_NOT_FOUND, f"method not found: {method}"))
        try:
            result = await handler(params)
        except AcpError as exc:
            return self._reply(msg_id, error=exc)
        except RpcError as exc:
            code = RESOURCE_NOT_FOUND if exc.code == p.CONVERSATION_NOT_FOUND else p.INTERNAL_ERROR
            return self._reply(msg_id, error=AcpError(code, exc.message, {"chatdCode": exc.code}))
        except (KeyError, TypeError, AttributeError) as exc:
            return self._reply(msg_id, error=AcpError(p.INVALID_PARAMS, f"invalid params: {exc!r}"))
        except Exception as exc:  # every request gets exactly one reply
            log.exception("acp: %s failed", method)
            return self._reply(msg_id, error=AcpError(p.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))
        self._reply(msg_id, result)

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"initialize": self.initialize, "authenticate": self._empty, "session/new": self.new_session,
                "session/load": self.load_session, "session/list": self.list_sessions,
                "session/prompt": self.prompt}

    async def _empty(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        from chatd import __version__

        return {"protocolVersion": ACP_VERSION,
                "agentCapabilities": {"loadSession": True,
                                      "promptCapabilities": {"image": False, "audio": False, "embeddedContext": True},
                                      "sessionCapabilities": {"list": {}}},
                "agentInfo": {"name": "chatd", "title": "chatd", "version": __version__},
                "authMethods": []}

    async def new_session(self, params: dict[str, Any]) -> dict[str, Any]:
        meta = params.get("_meta") or {}
        name = meta.get("chatd/conversation") or f"acp-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        create: dict[str, Any] = {"name": name}
        if self.models:
            create["models"] = self.models
        await self.daemon.request(p.CONVERSATION_CREATE, create)
        await self._attach(name, params.get("cwd"))
        return {"sessionId": name}

    async def load_session(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["sessionId"]
        snapshot = await self._attach(name, params.get("cwd"))
        session = self.sessions[name]
        for message in snapshot["messages"]:
            for update in _replay(message):
                self._update(session, update)
        active = snapshot.get("activeTurn")
        if active:
            session.own_turns.discard(active["turnId"])
            self._update(session, {"sessionUpdate": "user_message_chunk",
                                   "content": _text_block(active["user"]["text"])})
            if active.get("text"):
                self._update(session, {"sessionUpdate": "agent_message_chunk", "content": _text_block(active["text"])})
        return {}

    async def list_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        found = (await self.daemon.request(p.CONVERSATION_LIST, {"limit": 1000}))["conversations"]
        cwd = params.get("cwd") or os.getcwd()  # chatd conversations belong to no directory
        return {"sessions": [{"sessionId": c["name"], "cwd": cwd, "title": c["name"], "updatedAt": _iso(c["updatedAt"])}
                             for c in found if not c["name"].startswith(".")]}

    async def prompt(self, params: dict[str, Any]) -> dict[str, Any]:
        session = self._session(params["sessionId"])
        text = prompt_text(params["prompt"])
        send: dict[str, Any] = {"conversation": session.conversation, "text": text}
        if self.tools:
            send["tools"] = self.tools
        if session.cwd:
            send["workspace"] = session.cwd
        session.prompts.append(text)
        msg_id, future = self.daemon.start_request(p.CHAT_SEND, send)
        session.sending.add(msg_id)
        try:
            reply = await future
        except ConnectionError as exc:
            raise AcpError(p.INTERNAL_ERROR, f"lost the chatd daemon: {exc}") from None
        finally:
            session.sending.discard(msg_id)
        error = reply.get("error")
        if error is not None and text in session.prompts:
            session.prompts.remove(text)  # refused, or cancelled, before it started
        if error is not None:
            if error.get("code") == p.REQUEST_CANCELLED:
                return {"stopReason": "cancelled"}
            raise AcpError(p.INTERNAL_ERROR, error.get("message", "the turn failed"), {"chatdCode": error.get("code")})
        result = reply["result"]
        return {"stopReason": _STOP_REASONS.get(result.get("finishReason") or "stop", "end_turn")}

    def _cancel(self, params: dict[str, Any]) -> None:
        session = self.sessions.get(params.get("sessionId", ""))
        for msg_id in list(session.sending if session else ()):
            self.daemon.notify(p.CANCEL_REQUEST, {"id": msg_id})

    # ------------------------------------------------------------ sessions
    def _session(self, session_id: str) -> _Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise AcpError(RESOURCE_NOT_FOUND, f"no session {session_id!r} (session/new or session/load it first)")
        return session

    async def _attach(self, name: str, cwd: str | None) -> dict[str, Any]:
        snapshot = await self.daemon.request(p.CONVERSATION_SUBSCRIBE, {"name": name})
        session = self.sessions.get(name) or _Session(id=name, conversation=name, cwd=cwd)
        session.cwd = cwd or session.cwd
        self.sessions[name] = session
        self._by_conv[name] = session
        return snapshot

    def _update(self, session: _Session, update: dict[str, Any]) -> None:
        self._write({"jsonrpc": "2.0", "method": "session/update",
                     "params": {"sessionId": session.id, "update": update}})

    # ------------------------------------------------------------ daemon -> editor
    def _on_daemon_note(self, method: str, params: Any) -> None:
        if method == p.CONVERSATION_CHANGED:
            return self._changed(params)
        session = self._by_conv.get((params or {}).get("conversation", ""))
        if session is None:
            return
        if method == p.CHAT_TURN_STARTED:
            user = params["user"]["text"]
            if session.prompts and session.prompts[0] == user:
                session.prompts.popleft()
                session.own_turns.add(params["turnId"])
            else:  # another client's turn: show what its user said
                self._update(session, {"sessionUpdate": "user_message_chunk", "content": _text_block(user)})
        elif method == p.CHAT_DELTA:
            self._update(session, {"sessionUpdate": "agent_message_chunk", "content": _text_block(params["text"])})
        elif method == p.CHAT_TOOL_CALL:
            self._update(session, {"sessionUpdate": "tool_call", "toolCallId": params["callId"],
                                   "title": tool_title(params["tool"], params["arguments"]),
                                   "kind": tool_kind(params["tool"]), "status": "pending",
                                   "rawInput": params["arguments"]})
        elif method == p.CHAT_TOOL_RESULT:
            self._update(session, _tool_done(params["callId"], params["output"], params["isError"]))
        elif method == p.CHAT_ATTEMPT:
            note = f"{params['model']} failed ({params.get('reason')}); {params.get('next')}"
            self._update(session, {"sessionUpdate": "agent_thought_chunk", "content": _text_block(note + "\n")})
        elif method == p.CHAT_TURN_ENDED:
            session.own_turns.discard(params["turnId"])

    def _changed(self, params: dict[str, Any]) -> None:
        if params.get("kind") == "renamed":
            session = self._by_conv.pop(params.get("oldName") or "", None)
            if session is not None:
                session.conversation = params["name"]
                self._by_conv[params["name"]] = session
        elif params.get("kind") == "deleted":
            self._by_conv.pop(params["name"], None)

    async def _approve(self, params: dict[str, Any]) -> dict[str, Any]:
        """The daemon's `tool/approve` -> ACP `session/request_permission`; only an allow option approves."""
        session = self._by_conv.get(params.get("conversation", ""))
        if session is None:
            return {"approved": False}
        tool_call = {"toolCallId": params["callId"], "title": tool_title(params["tool"], params["arguments"]),
                     "kind": tool_kind(params["tool"]), "status": "pending", "rawInput": params["arguments"]}
        reply = await self._request("session/request_permission",
                                    {"sessionId": session.id, "toolCall": tool_call, "options": _PERMISSION_OPTIONS})
        outcome = (reply.get("result") or {}).get("outcome") or {}
        return {"approved": outcome.get("outcome") == "selected" and outcome.get("optionId") == "allow"}

    async def _request(self, method: str, params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        self._write({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        try:
            return await future
        finally:
            self._pending.pop(msg_id, None)

    def _reply(self, msg_id: Any, result: Any = None, *, error: AcpError | None = None) -> None:
        if error is not None:
            err: dict[str, Any] = {"code": error.code, "message": error.message}
            if error.data is not None:
                err["data"] = error.data
            self._write({"jsonrpc": "2.0", "id": msg_id, "error": err})
        else:
            self._write({"jsonrpc": "2.0", "id": msg_id, "result": result})

    def close(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_result({"result": {"outcome": {"outcome": "cancelled"}}})


def _tool_done(call_id: str, output: Any, is_error: bool) -> dict[str, Any]:
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    return {"sessionUpdate": "tool_call_update", "toolCallId": call_id,
            "status": "failed" if is_error else "completed",
            "content": [{"type": "content", "content": _text_block(text)}], "rawOutput": output}


def _replay(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One stored message as the session/updates that would have shown it live."""
    role, out = message["role"], []
    for part in message.get("parts") or []:
        kind = part.get("type")
        if kind == "text" and role in ("user", "assistant") and part.get("text"):
            chunk = "user_message_chunk" if role == "user" else "agent_message_chunk"
            out.append({"sessionUpdate": chunk, "content": _text_block(part["text"])})
        elif kind == "thinking" and part.get("text"):
            out.append({"sessionUpdate": "agent_thought_chunk", "content": _text_block(part["text"])})
        elif kind == "toolCall":
            out.append({"sessionUpdate": "tool_call", "toolCallId": part["id"],
                        "title": tool_title(part["name"], part.get("arguments")), "kind": tool_kind(part["name"]),
                        "status": "pending", "rawInput": part.get("arguments")})
        elif kind == "toolResult":
            out.append(_tool_done(part["callId"], part.get("output"), bool(part.get("isError"))))
    return out


async def serve(socket_path: str, *, tools: list[str] | None = None, models: list[str] | None = None) -> int:
    """Run the agent on this process's stdin/stdout until the editor closes stdin or the daemon goes."""
    loop = asyncio.get_running_loop()
    daemon = await AsyncClient.connect(socket_path)
    await daemon.request(p.INITIALIZE, {"clientInfo": {"name": "chatd-acp"}, "capabilities": {"toolApproval": True}})
    stdin = await _stdin_reader(loop)
    write_bytes = await _stdout_writer(loop)

    def write(msg: dict[str, Any]) -> None:
        write_bytes(p.encode(msg) + b"\n")

    agent = AcpAgent(daemon, write, tools=tools, models=models)
    tasks: set[asyncio.Task[None]] = set()

    async def read_editor() -> None:
        while line := await stdin.readline():
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                write({"jsonrpc": "2.0", "id": None, "error": {"code": p.PARSE_ERROR, "message": "parse error"}})
                continue
            task = asyncio.ensure_future(agent.handle(msg))  # prompts run concurrently with cancels
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def daemon_gone() -> None:
        while (await daemon.notifications.get())[0] != "$/closed":
            pass

    editor, gone = asyncio.ensure_future(read_editor()), asyncio.ensure_future(daemon_gone())
    await asyncio.wait({editor, gone}, return_when=asyncio.FIRST_COMPLETED)
    agent.close()  # nobody is left to answer a permission request: each counts as refused
    if gone.done():
        print("chatd acp: lost the daemon", file=sys.stderr)
    elif tasks:  # stdin closed: answer what is in flight (as `chatd stdio` does), unless the daemon goes
        await asyncio.wait({gone, asyncio.ensure_future(asyncio.wait(set(tasks)))},
                           return_when=asyncio.FIRST_COMPLETED)
    for task in (editor, gone, *tasks):
        task.cancel()
    await daemon.close()
    return 1 if gone.done() and not editor.done() else 0


async def _stdin_reader(loop: asyncio.AbstractEventLoop) -> asyncio.StreamReader:
    """stdin as a StreamReader: a pipe or socket directly, a regular file (tests, replays) by a thread."""
    reader = asyncio.StreamReader(limit=MAX_LINE)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(0), "rb"))
    except ValueError:
        def pump() -> None:
            with os.fdopen(os.dup(0), "rb") as f:
                while chunk := f.read1(65536):
                    loop.call_soon_threadsafe(reader.feed_data, chunk)
            loop.call_soon_threadsafe(reader.feed_eof)

        loop.run_in_executor(None, pump)
    return reader


async def _stdout_writer(loop: asyncio.AbstractEventLoop) -> Callable[[bytes], None]:
    try:
        out, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(os.dup(1), "wb"))
    except ValueError:  # a regular file: plain blocking writes are fine
        stream = os.fdopen(os.dup(1), "wb", buffering=0)
        return stream.write
    return lambda data: None if out.is_closing() else out.write(data)
