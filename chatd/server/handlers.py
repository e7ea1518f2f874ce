"""The dispatch table: one thin handler per JSON-RPC method, params in (msgspec), result out.

Each handler converts raw params with the method's Struct, calls the daemon's services, and returns a
protocol Struct. Errors become JSON-RPC errors here, once: msgspec.ValidationError is -32602, a
ChatdError carries its own code, anything else is -32603 with the detail in the log only.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable

import msgspec
from pygls.exceptions import JsonRpcException

import chatd
from chatd import protocol as p
from chatd.batch import run_batch
from chatd.conversation import info
from chatd.errors import ChatdError, InvalidArgument, LimitExceeded
from chatd.server.rpc import Connection, ErrorReply
from chatd.tools import Tool, ToolContext, ToolError, describe

if TYPE_CHECKING:
    from chatd.app import Daemon

log = logging.getLogger("chatd.handlers")

METHODS: dict[str, tuple[Callable[..., Any], type | None]] = {}


def method(name: str, params_type: type | None = None):
    def register(fn):
        METHODS[name] = (fn, params_type)
        return fn

    return register


def _convert(params: Any, params_type: type | None) -> Any:
    if params_type is None:
        return params
    if params is None or params == []:  # Lua's vim.json encodes an empty table as []
        params = {}
    elif type(params) is list:
        raise msgspec.ValidationError("chatd methods take named params (a JSON object)")
    return msgspec.convert(params, params_type)


def _error(exc: Exception, method_name: str) -> ErrorReply:
    if isinstance(exc, msgspec.ValidationError):
        return ErrorReply(p.INVALID_PARAMS, f"invalid params for {method_name}: {exc}")
    if isinstance(exc, ChatdError):
        return ErrorReply(exc.code, exc.message, exc.data)
    log.exception("internal error in %s", method_name)
    return ErrorReply(p.INTERNAL_ERROR, f"internal error in {method_name}: {type(exc).__name__} (see the daemon log)")


def bind(conn: Connection) -> dict[str, Callable[[Any], Any]]:
    """The per-connection table pygls dispatches through: each entry takes the raw params."""
    return {name: _bound(conn, name, fn, ptype) for name, (fn, ptype) in METHODS.items()}


def _bound(conn: Connection, name: str, fn: Callable[..., Any], ptype: type | None) -> Callable[[Any], Any]:
    if inspect.iscoroutinefunction(fn):
        async def run_async(params: Any) -> Any:
            try:
                return await fn(conn, _convert(params, ptype))
            except Exception as exc:  # CancelledError passes: rpc answers -32800
                return _error(exc, name)

        return run_async

    def run(params: Any) -> Any:
        try:
            return fn(conn, _convert(params, ptype))
        except Exception as exc:
            return _error(exc, name)

    return run


def _daemon(conn: Connection) -> "Daemon":
    return conn.context


# ---------------------------------------------------------------- lifecycle
@method(p.INITIALIZE, p.InitializeParams)
def initialize(conn: Connection, params: p.InitializeParams) -> dict[str, Any]:
    conn.initialized = True
    if params.client_info:
        conn.name = str(params.client_info.get("name", conn.name))[:100]
    root = params.workspace_root or params.root_path
    if root:
        conn.workspace = os.path.abspath(os.path.expanduser(root))
    conn.approves = bool((params.capabilities or {}).get("toolApproval"))
    return {
        "serverInfo": {"name": "chatd", "version": chatd.__version__},
        "protocolVersion": p.PROTOCOL_VERSION,
        "capabilities": {"methods": sorted(METHODS)},
    }


@method("initialized")
def initialized(conn: Connection, params: Any) -> None:
    return None


@method(p.SHUTDOWN)
def shutdown(conn: Connection, params: Any) -> None:
    conn.shut_down = True
    return None


@method(p.DAEMON_STATUS)
def daemon_status(conn: Connection, params: Any) -> p.DaemonStatus:
    d = _daemon(conn)
    return p.DaemonStatus(
        version=chatd.__version__, protocol_version=p.PROTOCOL_VERSION, pid=os.getpid(),
        uptime_s=time.monotonic() - d.started, store_path=d.store.path, socket_path=d.socket_path,
        connections=len(d.connections), active_turns=d.service.active_turns, providers=d.provider_keys(),
        open_fds=_open_fds(), tasks=len(asyncio.all_tasks()),
    )


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


@method(p.DAEMON_SHUTDOWN)
def daemon_shutdown(conn: Connection, params: Any) -> p.OkResult:
    asyncio.get_running_loop().call_soon(_daemon(conn).request_stop)
    return p.OkResult()


@method(p.DAEMON_RELOAD)
async def daemon_reload(conn: Connection, params: Any) -> dict[str, Any]:
    return {"warnings": await _daemon(conn).reload()}


@method(p.MODELS_LIST)
async def models_list(conn: Connection, params: Any) -> p.ModelsListResult:
    await _daemon(conn).discover_local_models()
    return p.ModelsListResult(models=_daemon(conn).models_out())


# ---------------------------------------------------------------- conversations
@method(p.CONVERSATION_CREATE, p.ConversationCreateParams)
def conversation_create(conn: Connection, params: p.ConversationCreateParams) -> p.ConversationResult:
    return p.ConversationResult(conversation=info(_daemon(conn).service.create(params)))


@method(p.CONVERSATION_LIST, p.ConversationListParams)
def conversation_list(conn: Connection, params: p.ConversationListParams) -> p.ConversationListResult:
    convs = _daemon(conn).service.list(params.query, params.limit)
    return p.ConversationListResult(conversations=[info(c) for c in convs])


@method(p.CONVERSATION_GET, p.ConversationGetParams)
def conversation_get(conn: Connection, params: p.ConversationGetParams) -> p.ConversationGetResult:
    service = _daemon(conn).service
    conv, messages = service.get(params.name, params.after_seq)
    return p.ConversationGetResult(conversation=info(conv), messages=messages,
                                   active_turn=service.active_turn(params.name), context=service.context_info(conv))


@method(p.CONVERSATION_UPDATE, p.ConversationUpdateParams)
def conversation_update(conn: Connection, params: p.ConversationUpdateParams) -> p.ConversationResult:
    return p.ConversationResult(conversation=info(_daemon(conn).service.update(params)))


@method(p.CONVERSATION_DELETE, p.NameParams)
def conversation_delete(conn: Connection, params: p.NameParams) -> p.OkResult:
    _daemon(conn).service.delete(params.name)
    return p.OkResult()


@method(p.CONVERSATION_CLEAR, p.NameParams)
def conversation_clear(conn: Connection, params: p.NameParams) -> p.ConversationResult:
    return p.ConversationResult(conversation=info(_daemon(conn).service.clear(params.name)))


@method(p.CONVERSATION_FORK, p.ConversationForkParams)
def conversation_fork(conn: Connection, params: p.ConversationForkParams) -> p.ConversationResult:
    return p.ConversationResult(conversation=info(_daemon(conn).service.fork(params)))


@method(p.CONVERSATION_SUBSCRIBE, p.SubscribeParams)
def conversation_subscribe(conn: Connection, params: p.SubscribeParams) -> Any:
    d = _daemon(conn)
    if params.create and params.name != p.WILDCARD and d.store.get(params.name) is None:
        d.service.create(p.ConversationCreateParams(name=params.name))
    if params.name == p.WILDCARD:
        d.hub.subscribe(None, conn)
        return p.ConversationListResult(conversations=[info(c) for c in d.service.list(None, 10_000)])
    conv, messages = d.service.get(params.name, params.after_seq)
    d.hub.subscribe(conv.id, conn)  # same tick as the read: no event can fall between them
    return p.ConversationGetResult(conversation=info(conv), messages=messages,
                                   active_turn=d.service.active_turn(params.name))


@method(p.CONVERSATION_UNSUBSCRIBE, p.NameParams)
def conversation_unsubscribe(conn: Connection, params: p.NameParams) -> p.OkResult:
    d = _daemon(conn)
    d.hub.unsubscribe(None if params.name == p.WILDCARD else d.service.lookup(params.name).id, conn)
    return p.OkResult()


# ---------------------------------------------------------------- chat
@method(p.CHAT_SEND, p.ChatSendParams)
async def chat_send(conn: Connection, params: p.ChatSendParams) -> p.SendResult:
    limit = _daemon(conn).config.limits.max_turns_per_connection
    if conn.turns_in_flight >= limit:
        raise LimitExceeded(f"{limit} chat/send requests are already in flight on this connection")
    conn.turns_in_flight += 1
    try:
        return await _send(conn, params)
    finally:
        conn.turns_in_flight -= 1


async def _send(conn: Connection, params: p.ChatSendParams) -> p.SendResult:
    if params.tools:
        await _daemon(conn).tools_loaded()
    return await _daemon(conn).service.send(params, origin=conn, workspace=params.workspace or conn.workspace)


@method(p.CHAT_CANCEL, p.ChatCancelParams)
def chat_cancel(conn: Connection, params: p.ChatCancelParams) -> p.CancelResult:
    return p.CancelResult(cancelled=_daemon(conn).service.cancel(params.conversation))


# ---------------------------------------------------------------- tools
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@method(p.TOOLS_LIST)
async def tools_list(conn: Connection, params: Any) -> p.ToolsListResult:
    await _daemon(conn).tools_loaded()
    return p.ToolsListResult(tools=[describe(t) for t in _daemon(conn).tools.all()])


@method(p.TOOLS_REGISTER, p.ToolsRegisterParams)
def tools_register(conn: Connection, params: p.ToolsRegisterParams) -> dict[str, Any]:
    registry = _daemon(conn).tools
    for decl in params.tools:
        if not _TOOL_NAME.fullmatch(decl.name):
            raise InvalidArgument(f"tool name {decl.name!r}: 1-64 letters, digits, _ or -")
        if decl.parameters and decl.parameters.get("type", "object") != "object":
            raise InvalidArgument(f"tool {decl.name!r}: parameters must be a JSON Schema of type object")
    for decl in params.tools:
        registry.add(Tool(
            name=decl.name, description=decl.description,
            parameters=decl.parameters or {"type": "object", "properties": {}}, origin="client",
            run=_client_runner(conn, decl.name), side_effects=decl.side_effects, owner=conn,
            timeout_s=decl.timeout_s))
    return {"registered": [d.name for d in params.tools]}


@method(p.TOOLS_UNREGISTER, p.ToolsUnregisterParams)
def tools_unregister(conn: Connection, params: p.ToolsUnregisterParams) -> dict[str, Any]:
    registry = _daemon(conn).tools
    return {"unregistered": [n for n in params.names if registry.remove(n, owner=conn)]}


def _client_runner(conn: Connection, name: str):
    """Run a client tool in its client: `tool/invoke`, answered by the client's own code."""

    async def run(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        msg_id, future = conn.request(p.TOOL_INVOKE, p.ToolInvokeParams(
            conversation=ctx.conversation, turn_id=ctx.turn_id, call_id=ctx.call_id, tool=name,
            arguments=arguments))
        try:
            return await future
        except asyncio.CancelledError:
            conn.withdraw_request(msg_id)
            raise
        except JsonRpcException as exc:
            raise ToolError(f"the client's tool failed: {exc.message}") from None

    return run


# ---------------------------------------------------------------- batch
@method(p.CHAT_BATCH, p.ChatBatchParams)
async def chat_batch(conn: Connection, params: p.ChatBatchParams) -> p.ChatBatchResult:
    """Many prompts, results in input order; `chat/batchProgress` goes to this connection only."""
    return await run_batch(_daemon(conn).service, params, origin=conn, notify=conn.notify)


# ---------------------------------------------------------------- context windows, budgets, search
@method(p.CHAT_ESTIMATE, p.ChatEstimateParams)
def chat_estimate(conn: Connection, params: p.ChatEstimateParams) -> p.EstimateResult:
    return _daemon(conn).service.estimate(params, origin=conn)


@method(p.CONVERSATION_COMPACT, p.ConversationCompactParams)
async def conversation_compact(conn: Connection, params: p.ConversationCompactParams) -> p.CompactResult:
    return await _daemon(conn).service.compact(params)


@method(p.CONVERSATION_SEARCH, p.ConversationSearchParams)
def conversation_search(conn: Connection, params: p.ConversationSearchParams) -> p.SearchResult:
    service = _daemon(conn).service
    conv_id = service.lookup(params.conversation).id if params.conversation is not None else None
    hits = service.context.db.search(params.query, params.limit, conv_id)
    return p.SearchResult(results=[p.SearchHit(conversation=h.conversation, seq=h.seq, role=h.role,
                                               snippet=h.snippet, created_at=h.created_at) for h in hits])


# ---------------------------------------------------------------- import (the export format: docs/protocol.md)
@method(p.CONVERSATION_IMPORT, p.ConversationImportParams)
def conversation_import(conn: Connection, params: p.ConversationImportParams) -> p.ConversationResult:
    return p.ConversationResult(conversation=info(_daemon(conn).service.import_conversation(params)))
