"""One client connection: framing in and out, JSON-RPC 2.0 envelopes, and pygls' request machinery.

pygls' `JsonRPCProtocol` is kept for its request table (`_request_futures`) and requests to the client
with their response futures. Four of its layers are replaced, each measured (see the notes on #2, #10):
- the reader: pygls reads line by line and structures params into namedtuples through cattrs (4.2x a raw
  asyncio echo at p50). Here bytes go through `protocol.FrameDecoder` and `msgspec.json`, and handlers get
  raw params which they convert with msgspec Structs.
- the writer: pygls serialises with `json.dumps` and logs every body at INFO (prompts in the log); here
  msgspec encodes, and nothing is logged.
- envelopes: pygls has no batches and drops malformed messages silently; here every JSON-RPC 2.0 case
  gets its answer, and batches are answered as one array.
- running handlers: a sync handler is called and answered at once (pygls wraps it in a Future and a
  callback); an async one runs as a task that answers from its own last step (pygls answers from a
  done-callback, a loop iteration later; T2 overhead median 640 -> 590 µs in an A/B). `$/cancelRequest`
  cancels the task, and a cancelled handler still gets its -32800 reply, once, even before it started.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import Future
from typing import Any, Callable

from lsprotocol.types import ResponseError
from pygls.exceptions import JsonRpcMethodNotFound
from pygls.protocol import JsonRPCProtocol
from pygls.server import JsonRPCServer

from chatd import protocol as p

log = logging.getLogger("chatd.rpc")
logging.getLogger("pygls").setLevel(logging.CRITICAL)  # it logs bodies (prompts) and expected errors

Handler = Callable[["Connection", Any], Any]


# Messages queued in one tick before they are written without waiting for its end. A tick that answers a
# pipelined read of 64 requests wrote them all at its end, so the client had nothing to read until the
# daemon was done; in parts it reads (and sends more) meanwhile: 64 in flight A/B 1.4-1.6x the throughput.
FLUSH_AT = 16


class ErrorReply:
    """Returned by a handler wrapper in place of a result to answer with an error without pygls
    logging a traceback for an expected failure (not found, bad params)."""

    __slots__ = ("code", "message", "data")

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code, self.message, self.data = code, message, data


class _Batch:
    __slots__ = ("waiting", "replies")

    def __init__(self) -> None:
        self.waiting = 0
        self.replies: list[dict[str, Any]] = []


def error_dict(code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return err


class _Server(JsonRPCServer):
    def report_server_error(self, error: Exception, source: Any) -> None:
        log.debug("rpc error: %r", error)


class ChatdProtocol(JsonRPCProtocol):
    """pygls' protocol with chatd's dispatch table, msgspec output and batch replies."""

    def __init__(self, server: JsonRPCServer, converter: Any, *, conn: "Connection") -> None:
        super().__init__(server, converter)
        self.conn = conn
        self._batches: dict[Any, _Batch] = {}
        self._notification_tasks: set[asyncio.Future[Any]] = set()

    def _get_handler(self, feature_name: str) -> Any:
        handler = self.conn.handlers.get(feature_name)
        if handler is None:
            raise JsonRpcMethodNotFound.of(feature_name)
        return handler

    def _send_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        if type(result) is ErrorReply:
            error = error_dict(result.code, result.message, result.data)
        elif error is not None and not isinstance(error, dict):
            error = error_dict(error.code, error.message, getattr(error, "data", None))
        reply = ({"jsonrpc": "2.0", "id": msg_id, "error": error} if error is not None
                 else {"jsonrpc": "2.0", "id": msg_id, "result": result})
        if self._batches:
            batch = self._batches.pop(msg_id, None)
            if batch is not None:
                batch.replies.append(reply)
                batch.waiting -= 1
                if batch.waiting == 0:
                    self.conn.write(p.encode(batch.replies))
                    self.conn.after_reply()
                return
        self.conn.write(p.encode(reply))
        self.conn.after_reply()

    def handlers_running(self) -> int:
        return (sum(1 for f in self._request_futures.values() if isinstance(f, asyncio.Future))
                + len(self._batches) + len(self._notification_tasks))

    def notify(self, method: str, params: Any = None) -> None:
        self.conn.write(p.encode({"jsonrpc": "2.0", "method": method, "params": params}))

    def send_request(self, method: str, params: Any = None, callback: Any = None, msg_id: Any = None):
        msg_id = msg_id if msg_id is not None else uuid.uuid4().hex
        future: Future[Any] = Future()
        self._request_futures[msg_id] = future
        self.conn.write(p.encode({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}))
        return future

    # ------------------------------------------------------------ envelopes
    def receive(self, body: bytes) -> None:
        """Handle one frame body: a message or a batch."""
        try:
            message = p.decode(body)
        except Exception as exc:
            self._reply_error(None, p.PARSE_ERROR, f"parse error: {_short(exc)}")
            return
        if type(message) is list:
            self._receive_batch(message)
        else:
            self._receive_one(message, None)

    def _receive_batch(self, messages: list[Any]) -> None:
        if not messages:
            self._reply_error(None, p.INVALID_REQUEST, "invalid request: empty batch")
            return
        batch = _Batch()
        batch.waiting = 1  # held until every element is dispatched
        for message in messages:
            self._receive_one(message, batch)
        batch.waiting -= 1
        if batch.waiting == 0 and batch.replies:
            self.conn.write(p.encode(batch.replies))

    def _reply_error(self, msg_id: Any, code: int, message: str, batch: _Batch | None = None) -> None:
        reply = {"jsonrpc": "2.0", "id": msg_id, "error": error_dict(code, message)}
        if batch is not None:
            batch.replies.append(reply)
        else:
            self.conn.write(p.encode(reply))

    def _receive_one(self, msg: Any, batch: _Batch | None) -> None:
        if type(msg) is not dict:
            self._reply_error(None, p.INVALID_REQUEST, "invalid request: not an object", batch)
            return
        msg_id = msg.get("id")
        has_id = "id" in msg
        if has_id and not (msg_id is None or type(msg_id) in (int, str)):
            self._reply_error(None, p.INVALID_REQUEST, "invalid request: id must be a string, number or null", batch)
            return
        if msg.get("jsonrpc") != "2.0":
            self._reply_error(msg_id, p.INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', batch)
            return
        method = msg.get("method")
        if method is None:
            if has_id and ("result" in msg or "error" in msg):
                self._receive_response(msg_id, msg)
            else:
                self._reply_error(msg_id, p.INVALID_REQUEST, "invalid request: no method", batch)
            return
        if type(method) is not str:
            self._reply_error(msg_id, p.INVALID_REQUEST, "invalid request: method must be a string", batch)
            return
        params = msg.get("params")
        if params is not None and type(params) not in (dict, list):
            self._reply_error(msg_id, p.INVALID_REQUEST, "invalid request: params must be an object or array",
                              batch)
            return
        if not has_id:
            self._receive_notification(method, params)
            return
        if batch is not None:
            if msg_id in self._batches or msg_id in self._request_futures:
                self._reply_error(msg_id, p.INVALID_REQUEST, "invalid request: duplicate id in flight", batch)
                return
            self._batches[msg_id] = batch
            batch.waiting += 1
        if self.conn.shut_down and method != p.SHUTDOWN:
            self._send_response(msg_id, ErrorReply(p.INVALID_REQUEST, "shutdown was requested: only exit is accepted"))
            return
        handler = self.conn.handlers.get(method)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: request %r %s", self.conn.name, msg_id, method[:100])  # never params: prompts
        if handler is None:
            self._send_response(msg_id, ErrorReply(p.METHOD_NOT_FOUND, f"method not found: {method}"))
        elif asyncio.iscoroutinefunction(handler):
            self._request_futures[msg_id] = asyncio.ensure_future(self._answer(msg_id, handler, params))
        else:
            # A sync handler cannot be cancelled; pygls would wrap its result in a concurrent Future and a
            # callback (2.5x the cost of the call). Its errors are already ErrorReplies (handlers.bind).
            self._send_response(msg_id, handler(params))

    async def _answer(self, msg_id: Any, handler: Handler, params: Any) -> None:
        """Run an async handler as a task (filed in `_request_futures`, where `$/cancelRequest` finds it)
        and answer from the task's own last step. pygls answers from a done-callback: one more loop
        iteration, and a write of its own after the tick's other messages (the turn's last notifications)."""
        task = asyncio.current_task()
        try:
            result = await handler(params)  # type: ignore[misc]
        except asyncio.CancelledError:
            self._answer_cancelled(msg_id, task)  # type: ignore[arg-type]
            raise
        except Exception as exc:  # handlers.bind returns expected failures as ErrorReplies: this is a bug
            log.exception("%s: request %r failed", self.conn.name, msg_id)
            result = ErrorReply(p.INTERNAL_ERROR, f"internal error: {_short(exc)}")
        if self._request_futures.get(msg_id) is task:  # not a later request the client gave the same id
            del self._request_futures[msg_id]
        self._send_response(msg_id, result)

    def _answer_cancelled(self, msg_id: Any, task: "asyncio.Future[Any]") -> None:
        """A cancelled handler's -32800 reply, sent once: from its task, or (cancelled before its first
        step, when its code never ran) from the done-callback the cancel added."""
        if self._request_futures.get(msg_id) is not task:
            return
        del self._request_futures[msg_id]
        self._send_response(msg_id, ErrorReply(p.REQUEST_CANCELLED, f'Request with id "{msg_id}" is canceled'))

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        if type(msg_id) not in (int, str):
            return  # no request of the client's has such an id (and a list is not a key)
        future = self._request_futures.get(msg_id)
        if type(future) is asyncio.Task and future.cancel():
            future.add_done_callback(lambda task: self._answer_cancelled(msg_id, task))

    def _receive_notification(self, method: str, params: Any) -> None:
        if method == p.CANCEL_REQUEST:
            if type(params) is dict and "id" in params:
                self._handle_cancel_notification(params["id"])
            return
        if method == p.EXIT:
            self.conn.close()
            return
        handler = self.conn.handlers.get(method)
        if handler is None:
            return  # unknown notifications are ignored, per JSON-RPC
        if asyncio.iscoroutinefunction(handler):
            # Not pygls' _handle_notification: it files the task in _request_futures under a fresh uuid
            # and never removes it (a leak, and handlers_running() never reaches 0 after a half-close).
            task = asyncio.ensure_future(handler(params))
            self._notification_tasks.add(task)
            task.add_done_callback(self._notification_done)
            return
        self._handle_notification(method, params)

    def _notification_done(self, task: "asyncio.Future[Any]") -> None:
        self._notification_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("notification handler failed: %r", task.exception())
        self.conn.after_reply()

    def _receive_response(self, msg_id: Any, msg: dict[str, Any]) -> None:
        future = self._request_futures.get(msg_id)
        if future is None or isinstance(future, asyncio.Future):
            return  # not an answer to a request of ours (asyncio futures are the client's own requests)
        error = msg.get("error")
        if error is not None:
            if type(error) is not dict:
                error = {"code": p.INTERNAL_ERROR, "message": str(error)}
            code = error.get("code")
            if type(code) is not int or not -(2**31) <= code < 2**31:
                code = p.INTERNAL_ERROR
            self._handle_response(msg_id, None, ResponseError(
                code=code, message=str(error.get("message", "")), data=error.get("data")))
        else:
            self._handle_response(msg_id, msg.get("result"))

    def cancel_all(self) -> None:
        """The connection is gone: fail our requests to the client (as ConnectionError, which callers
        turn into tool errors: a cancel would look like the turn being cancelled); its own handlers run on."""
        for msg_id, future in list(self._request_futures.items()):
            if not future.done() and not isinstance(future, asyncio.Future):
                self._request_futures.pop(msg_id, None)
                future.set_exception(ConnectionError("the client disconnected"))


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."


class _TickDelta:
    """The `chat/delta`s of one turn queued in one tick, sent as one."""

    __slots__ = ("key", "texts", "body")

    def __init__(self, key: tuple[str, str], texts: list[str], body: bytes) -> None:
        self.key, self.texts, self.body = key, texts, body


class Connection:
    """A client connection over any byte transport; writes are framed as the client framed its first frame.

    Output to a slow reader is bounded: above the high-water mark the transport pauses us; we stop
    reading that client's requests until it catches up, and the `chat/delta`s for each turn are merged
    into one meanwhile (nothing is lost, fewer messages are sent);
    a client that stays paused past `stuck_timeout`, or lets `hard_cap` bytes pile up, is disconnected
    with a log line. The daemon, the provider stream and every other client go on regardless.
    """

    def __init__(self, handlers: dict[str, Handler], context: Any, *, lsp_only: bool = False,
                 name: str = "client", limits: Any = None) -> None:
        self.handlers = handlers
        self.context = context  # the daemon, for handlers
        self.name = name
        self.decoder = p.FrameDecoder(lsp_only=lsp_only)
        self.closing = False
        self.shut_down = False  # after an LSP `shutdown`, only `exit` is accepted
        self.got_eof = False
        self._pending_out: list[bytes | _TickDelta] | None = None  # messages queued this event-loop tick
        self.closed = asyncio.Event()
        self.initialized = False
        self.workspace: str | None = None  # named at initialize; confines the built-in file tools
        self.approves = False  # said at initialize it answers `tool/approve`
        self._transport: asyncio.WriteTransport | None = None
        self.limits = limits
        self.paused = False
        self.turns_in_flight = 0
        self._coalesced: dict[tuple[str, str], list[str]] = {}  # (conversation, turn) -> delta texts
        self._stuck_timer: asyncio.TimerHandle | None = None
        server = _Server(protocol_cls=lambda s, c: ChatdProtocol(s, c, conn=self), converter_factory=lambda: None)
        self.protocol: ChatdProtocol = server.protocol  # type: ignore[assignment]

    def eof(self) -> None:
        """The client closed its sending side: answer what is in flight, then close."""
        self._dispatch(self.decoder.finish())
        self.got_eof = True
        self.after_reply()

    def after_reply(self) -> None:
        if self.got_eof and not self.closing and self.protocol.handlers_running() == 0:
            asyncio.get_running_loop().call_soon(self._close_if_idle)

    def _close_if_idle(self) -> None:
        if not self.closing and self.protocol.handlers_running() == 0:
            self.close()

    def attach(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        if self.limits is not None:
            high = self.limits.output_high_water
            transport.set_write_buffer_limits(high=high, low=high // 4)

    # ------------------------------------------------------------ backpressure
    def pause_writing(self) -> None:
        self.paused = True
        # Flow control: a client that sends faster than it reads waits for its replies to drain.
        pause_reading = getattr(self._transport, "pause_reading", None)
        if pause_reading is not None and not self.closing:
            pause_reading()
        if self.limits is not None and self._stuck_timer is None:
            self._stuck_timer = asyncio.get_running_loop().call_later(self.limits.stuck_client_timeout, self._stuck)

    def resume_writing(self) -> None:
        self.paused = False
        resume_reading = getattr(self._transport, "resume_reading", None)
        if resume_reading is not None and not self.closing:
            resume_reading()
        if self._stuck_timer is not None:
            self._stuck_timer.cancel()
            self._stuck_timer = None
        self._flush_deltas()

    def _stuck(self) -> None:
        self._stuck_timer = None
        if self.paused and not self.closing:
            unread = self._transport.get_write_buffer_size() if self._transport is not None else 0
            log.warning("closing %s: it read nothing for %gs with %d bytes waiting", self.name,
                        self.limits.stuck_client_timeout, unread)
            self.abort()

    def _flush_deltas(self) -> None:
        pending, self._coalesced = self._coalesced, {}
        for (conversation, turn_id), texts in pending.items():
            self.write(p.encode({"jsonrpc": "2.0", "method": p.CHAT_DELTA, "params": p.ChatDelta(
                conversation=conversation, turn_id=turn_id, text="".join(texts))}))

    def feed(self, data: bytes) -> None:
        self._dispatch(self.decoder.feed(data))

    def _dispatch(self, items: list[bytes | p.FrameError]) -> None:
        for item in items:
            if type(item) is bytes:
                self.protocol.receive(item)
            else:
                self.protocol._reply_error(None, p.INVALID_REQUEST if not item.fatal else p.PARSE_ERROR,
                                           f"framing error: {item.message}")
                if item.fatal:
                    self.close()
                    return

    def write(self, body: bytes) -> None:
        """Queue a message; what is queued in one event-loop tick goes out in few writes (the replies to
        one read, the deltas parsed from one provider chunk): one syscall per FLUSH_AT, not one a message."""
        self._queue(p.frame_line(body) if self.decoder.mode == "line" else p.frame_lsp(body))

    def _queue(self, item: "bytes | _TickDelta") -> None:
        if self._pending_out is None:
            if self.closing:
                return
            # The first message of a tick goes out at once (a reply's or a stream's first bytes are not
            # delayed); the rest wait for the tick's end, or until FLUSH_AT of them are queued.
            self._write([item])
            self._pending_out = []
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._pending_out.append(item)
            if len(self._pending_out) >= FLUSH_AT:  # a long tick goes out in parts: the reader works meanwhile
                out, self._pending_out = self._pending_out, []
                self._write(out)

    def _flush(self) -> None:
        out, self._pending_out = self._pending_out, None
        self._write(out)

    def _write(self, out: "list[bytes | _TickDelta] | None") -> None:
        transport = self._transport
        if not out or transport is None or transport.is_closing():
            return
        chunks = [x if type(x) is bytes else self._framed_delta(x) for x in out]  # type: ignore[arg-type]
        transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self.paused and self.limits is not None and transport.get_write_buffer_size() > self.limits.output_hard_cap:
            log.warning("closing %s: more than %d bytes unread", self.name, self.limits.output_hard_cap)
            self.abort()

    def notify(self, method: str, params: Any) -> None:
        self.protocol.notify(method, params)

    def send_body(self, body: bytes, delta: p.ChatDelta | None = None) -> None:
        """Write an already-encoded message (the hub encodes a notification once for all subscribers).
        `chat/delta`s of one turn queued in the same tick are merged into one; for a paused (slow)
        reader they are merged until it catches up."""
        if self.paused:
            if delta is not None:
                self._coalesced.setdefault((delta.conversation, delta.turn_id), []).append(delta.text)
                return
            self._flush_deltas()  # keep order: a turn's deltas before what follows them
        if delta is None:
            self.write(body)
            return
        key = (delta.conversation, delta.turn_id)
        last = self._pending_out[-1] if self._pending_out else None
        if type(last) is _TickDelta and last.key == key:
            last.texts.append(delta.text)
        else:
            self._queue(_TickDelta(key, [delta.text], body))

    def _framed_delta(self, item: "_TickDelta") -> bytes:
        body = item.body
        if len(item.texts) > 1:
            merged = p.ChatDelta(conversation=item.key[0], turn_id=item.key[1], text="".join(item.texts))
            body = p.encode({"jsonrpc": "2.0", "method": p.CHAT_DELTA, "params": merged})
        return p.frame_line(body) if self.decoder.mode == "line" else p.frame_lsp(body)

    def request(self, method: str, params: Any) -> tuple[Any, "asyncio.Future[Any]"]:
        """Send a request to the client: (its id, a future of the result)."""
        if self.closing:
            raise ConnectionError("the client disconnected")
        msg_id = uuid.uuid4().hex
        return msg_id, asyncio.wrap_future(self.protocol.send_request(method, params, msg_id=msg_id))

    def withdraw_request(self, msg_id: Any) -> None:
        """We no longer need an answer (another client answered first): tell the client."""
        future = self.protocol._request_futures.pop(msg_id, None)
        if future is not None and not future.done():
            future.cancel()
            self.notify(p.CANCEL_REQUEST, {"id": msg_id})

    def close(self) -> None:
        if self.closing:
            return
        self._flush()  # what was queued this tick still goes out (close() flushes the transport too)
        self.closing = True
        if self._stuck_timer is not None:
            self._stuck_timer.cancel()
        if self._transport is not None:
            self._transport.close()
        self.closed.set()

    def abort(self) -> None:
        """Close without flushing what the client did not read."""
        transport = self._transport
        self._pending_out = None
        self.close()
        if transport is not None:
            transport.abort()
