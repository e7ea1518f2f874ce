"""Bad input on a live connection: each case gets the right JSON-RPC error or a closed connection, and a
second client connected the whole time never notices (issue #2, "Shown by tests").

Every test talks to a real `chatd serve` subprocess over its real Unix socket with raw bytes. One daemon
serves the whole module (each test asserts it is still alive and still serving a bystander correctly); the
50 MB tests get a fresh daemon each, so its peak RSS measures that test alone. Synchronisation is only ever on replies, on EOF, or on process exit; socket
timeouts are a safety net that turns a hang into a failure, never a wait.
"""

from __future__ import annotations

import itertools
import os
import socket
from typing import Any

import msgspec
import pytest

from chatd import protocol as p
from helpers import new_daemon

TIMEOUT = 10.0  # a hang becomes a failure after this long; nothing waits for it on success

OK_ERROR_CODES = {p.PARSE_ERROR, p.INVALID_REQUEST}


# ---------------------------------------------------------------- a raw client
class Closed(Exception):
    """The daemon closed the connection (EOF or reset)."""


class RawConn:
    """A socket client that sends exact bytes and reads replies in the framing it chose (`lsp`/`line`).

    Replies are parsed strictly: in `line` mode every reply must be one JSON value on its own line with no
    `Content-Length` header; in `lsp` mode every reply must carry a correct `Content-Length`.
    """

    def __init__(self, path: str, mode: str = "lsp") -> None:
        assert mode in ("lsp", "line")
        self.mode = mode
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []
        self.eof = False

    # sending
    def frame(self, body: bytes) -> bytes:
        return p.frame_lsp(body) if self.mode == "lsp" else p.frame_line(body)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_body(self, body: bytes) -> None:
        self.sock.sendall(self.frame(body))

    def send(self, msg: Any) -> None:
        self.send_body(msgspec.json.encode(msg))

    def send_request(self, method: str, params: Any = None, msg_id: Any = None) -> Any:
        msg_id = next(self._ids) if msg_id is None else msg_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return msg_id

    def half_close(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()

    # receiving
    def _fill(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError(f"no reply and no EOF within {TIMEOUT}s") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise Closed()
        self._buf += data

    def _next_frame(self) -> bytes:
        while True:
            if self.mode == "line":
                nl = self._buf.find(b"\n")
                if nl >= 0:
                    line = bytes(self._buf[:nl])
                    del self._buf[: nl + 1]
                    assert not line.lower().startswith(b"content-length"), line[:80]
                    return line
            else:
                end = self._buf.find(b"\r\n\r\n")
                if end >= 0:
                    headers = bytes(self._buf[:end]).split(b"\r\n")
                    lengths = [int(h.split(b":", 1)[1]) for h in headers if h.lower().startswith(b"content-length:")]
                    assert len(lengths) == 1, headers
                    if len(self._buf) >= end + 4 + lengths[0]:
                        body = bytes(self._buf[end + 4 : end + 4 + lengths[0]])
                        del self._buf[: end + 4 + lengths[0]]
                        return body
            self._fill()

    def recv_any(self) -> Any:
        """The next message (object or batch array), notifications included. Raises Closed at EOF."""
        body = self._next_frame()
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise AssertionError(f"the daemon sent invalid JSON: {body[:200]!r}") from None

    def recv(self) -> Any:
        """The next reply (a response object or a batch array); daemon notifications are set aside."""
        while True:
            msg = self.recv_any()
            if type(msg) is dict and "method" in msg and "id" not in msg:
                assert_valid_notification(msg)
                self.notifications.append(msg)
                continue
            return msg

    def reply(self, msg_id: Any) -> dict[str, Any]:
        msg = self.recv()
        assert type(msg) is dict, msg
        assert_valid_response(msg)
        assert msg["id"] == msg_id and type(msg["id"]) is type(msg_id), (msg_id, msg)
        return msg

    def call(self, method: str, params: Any = None) -> Any:
        msg = self.reply(self.send_request(method, params))
        assert "error" not in msg, msg
        return msg["result"]

    def expect_error(self, msg_id: Any, code: int) -> dict[str, Any]:
        msg = self.reply(msg_id)
        assert "error" in msg, msg
        assert msg["error"]["code"] == code, msg
        return msg["error"]

    def read_until_eof(self) -> list[Any]:
        """Every reply until the daemon closes the connection."""
        out = []
        while True:
            try:
                out.append(self.recv())
            except Closed:
                return out


def assert_valid_response(msg: Any) -> None:
    """A JSON-RPC 2.0 response object, exactly."""
    assert type(msg) is dict, msg
    assert msg.get("jsonrpc") == "2.0", msg
    assert "id" in msg and (msg["id"] is None or type(msg["id"]) in (int, str)), msg
    assert ("result" in msg) != ("error" in msg), msg
    assert set(msg) <= {"jsonrpc", "id", "result", "error"}, msg
    if "error" in msg:
        err = msg["error"]
        assert type(err) is dict and type(err.get("code")) is int and type(err.get("message")) is str, msg
        assert set(err) <= {"code", "message", "data"}, msg


def assert_valid_notification(msg: Any) -> None:
    assert msg.get("jsonrpc") == "2.0" and type(msg["method"]) is str, msg
    assert set(msg) <= {"jsonrpc", "method", "params"}, msg


def assert_closed_after_errors(conn: RawConn) -> list[Any]:
    """Read to EOF: everything before it must be id-null parse/invalid-request errors."""
    replies = conn.read_until_eof()
    for msg in replies:
        assert_valid_response(msg)
        assert msg["id"] is None and msg["error"]["code"] in OK_ERROR_CODES, msg
    return replies


# ---------------------------------------------------------------- the other client
_send_names = itertools.count(1)


class Bystander:
    """A well-behaved LSP client connected for the whole test. `check()` proves it never noticed."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.conn = RawConn(daemon.socket)
        self.conn.call(p.INITIALIZE, {"clientInfo": {"name": "bystander"}})
        self.check()

    def check(self) -> None:
        assert self.daemon.proc.poll() is None, f"the daemon died:\n{self.daemon.log()[-3000:]}"
        status = self.conn.call(p.DAEMON_STATUS)
        assert status["pid"] == self.daemon.proc.pid
        assert status["socketPath"] == self.daemon.socket
        name = f"bystander-{os.getpid()}-{next(_send_names)}"
        sent = self.conn.call(p.CHAT_SEND, {"conversation": name, "text": "still here?", "preferModel": "echo"})
        assert sent["modelUsed"] == "echo" and sent["conversation"] == name
        assert sent["message"]["role"] == "assistant" and "still here?" in sent["message"]["text"]
        got = self.conn.call(p.CONVERSATION_GET, {"name": name})
        assert [m["role"] for m in got["messages"]] == ["user", "assistant"]
        assert self.daemon.proc.poll() is None


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One `chatd serve` subprocess for the module (overrides conftest's per-test daemon)."""
    d = new_daemon(tmp_path_factory.mktemp("hostile")).start()
    yield d
    d.stop()


@pytest.fixture
def fresh_daemon(tmp_path):
    d = new_daemon(tmp_path).start()
    yield d
    d.stop()


@pytest.fixture
def bystander(daemon):
    b = Bystander(daemon)
    yield b
    b.conn.close()


@pytest.fixture
def connect(daemon):
    conns: list[RawConn] = []

    def make(mode: str = "lsp", to: Any = None) -> RawConn:
        conns.append(RawConn((to or daemon).socket, mode))
        return conns[-1]

    yield make
    for c in conns:
        c.close()


def still_works(conn: RawConn) -> None:
    """The same connection still answers a request correctly."""
    status = conn.call(p.DAEMON_STATUS)
    assert type(status["pid"]) is int


# ---------------------------------------------------------------- garbage and framing
GARBAGE = {
    "binary-with-blank-line": b"\x00\x01\x02\xff\xfe garbage \x80\r\n\r\n",
    "http-request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "header-section-too-long": bytes(range(1, 256)) * 40,  # 10 KB with no blank line: not LSP framing
    "header-line-without-colon": b"Content-Length 2\r\n\r\n{}",
}


@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_bytes_get_an_error_and_a_closed_connection(daemon, bystander, connect, data):
    conn = connect()
    conn.send_raw(data)
    replies = assert_closed_after_errors(conn)
    assert len(replies) == 1, replies  # the error is said once, then the unframeable stream is dropped
    bystander.check()


def test_short_garbage_then_half_close_is_closed_cleanly(daemon, bystander, connect):
    conn = connect()
    conn.send_raw(b"\x07\x08 hello?")  # not enough to be a frame or a framing error yet
    conn.half_close()
    assert_closed_after_errors(conn)
    bystander.check()


def test_garbage_lines_in_line_mode_keep_the_connection(daemon, bystander, connect):
    conn = connect("line")
    still_works(conn)
    conn.send_raw(b"\x00\xff\xfe not json at all\n")
    msg = conn.recv()
    assert msg["id"] is None and msg["error"]["code"] == p.PARSE_ERROR, msg
    conn.send_raw(b"Content-Length: 2\r\n\r\n{}\n")  # LSP framing after choosing lines: just bad lines
    for _ in range(2):  # "Content-Length: 2\r" and "{}" (an empty object: invalid request)
        msg = conn.recv()
        assert msg["id"] is None and msg["error"]["code"] in OK_ERROR_CODES, msg
    still_works(conn)
    bystander.check()


BAD_CONTENT_LENGTH = {
    "non-numeric": b"Content-Length: abc\r\n\r\n{}",
    "missing": b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}",
    "negative": b"Content-Length: -2\r\n\r\n{}",
    "float": b"Content-Length: 2.0\r\n\r\n{}",
    "hex": b"Content-Length: 0x2\r\n\r\n{}",
    "empty": b"Content-Length:\r\n\r\n{}",
}


@pytest.mark.parametrize("data", BAD_CONTENT_LENGTH.values(), ids=BAD_CONTENT_LENGTH.keys())
def test_bad_content_length_is_a_parse_error_and_closes(daemon, bystander, connect, data):
    conn = connect()
    still_works(conn)
    conn.send_raw(data + p.frame_lsp(b'{"jsonrpc":"2.0","id":1,"method":"daemon/status"}'))
    replies = assert_closed_after_errors(conn)
    assert len(replies) == 1 and replies[0]["error"]["code"] == p.PARSE_ERROR, replies
    assert "Content-Length" in replies[0]["error"]["message"], replies
    bystander.check()


def test_content_length_zero_and_padded_values(daemon, bystander, connect):
    conn = connect()
    conn.send_raw(b"Content-Length: 0\r\n\r\n")  # an empty body is not JSON
    msg = conn.recv()
    assert msg["id"] is None and msg["error"]["code"] == p.PARSE_ERROR, msg
    body = b'{"jsonrpc":"2.0","id":"padded","method":"daemon/status"}'
    conn.send_raw(b"content-length:   %d  \r\nContent-Type: application/json\r\n\r\n%s" % (len(body), body))
    assert "result" in conn.reply("padded")
    still_works(conn)
    bystander.check()


def test_truncated_frame_then_half_close_is_closed_cleanly(daemon, bystander, connect):
    conn = connect()
    conn.send_raw(b"Content-Length: 100\r\n\r\n{\"jsonrpc\":")  # promises more than it sends
    conn.half_close()
    assert conn.read_until_eof() == []
    bystander.check()


# ---------------------------------------------------------------- invalid JSON
INVALID_JSON = {
    "truncated": b'{"jsonrpc":"2.0","id":1,"method":',
    "trailing-comma": b'{"jsonrpc":"2.0","id":1,"method":"daemon/status",}',
    "single-quotes": b"{'jsonrpc':'2.0','id':1}",
    "not-utf8": b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}',
    "nan": b'{"jsonrpc":"2.0","id":NaN,"method":"daemon/status"}',
    "two-values": b'{"jsonrpc":"2.0","id":1,"method":"daemon/status"} {}',
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
    "lone-surrogate": b'{"jsonrpc":"2.0","id":"\\ud800","method":"daemon/status"}',
}


@pytest.mark.parametrize("mode", ["lsp", "line"])
@pytest.mark.parametrize("body", INVALID_JSON.values(), ids=INVALID_JSON.keys())
def test_invalid_json_is_a_parse_error_and_the_connection_keeps_working(daemon, bystander, connect, body, mode):
    conn = connect(mode)
    still_works(conn)
    conn.send_body(body)
    msg = conn.recv()
    assert_valid_response(msg)
    assert msg["id"] is None and msg["error"]["code"] == p.PARSE_ERROR, msg
    assert len(msg["error"]["message"]) < 1000, msg  # the body is not echoed back
    still_works(conn)
    bystander.check()


# ---------------------------------------------------------------- envelopes
def test_unknown_method(daemon, bystander, connect):
    conn = connect()
    err = conn.expect_error(conn.send_request("no/such/method", {"x": 1}), p.METHOD_NOT_FOUND)
    assert "no/such/method" in err["message"]
    conn.send({"jsonrpc": "2.0", "method": "no/such/notification", "params": {}})  # ignored, per JSON-RPC
    err = conn.expect_error(conn.send_request("conversation/nope"), p.METHOD_NOT_FOUND)
    still_works(conn)
    bystander.check()


@pytest.mark.parametrize("method,params,field", [
    (p.CONVERSATION_GET, {"name": 5}, "name"),
    (p.CONVERSATION_GET, {"name": "x", "afterSeq": "ten"}, "afterSeq"),
    (p.CONVERSATION_LIST, {"limit": [1]}, "limit"),
    (p.CONVERSATION_CREATE, {"name": "x", "modelWeights": "heavy"}, "modelWeights"),
    (p.CHAT_SEND, {"conversation": "x", "text": "hi", "maxRounds": "many"}, "maxRounds"),
    (p.CHAT_SEND, {"conversation": "x", "parts": [{"type": "nope"}]}, "parts"),
    (p.CONVERSATION_GET, {}, "name"),  # missing required field
])
def test_wrong_param_types_name_the_field(daemon, bystander, connect, method, params, field):
    conn = connect()
    err = conn.expect_error(conn.send_request(method, params), p.INVALID_PARAMS)
    assert field in err["message"] and method in err["message"], err
    still_works(conn)
    bystander.check()


@pytest.mark.parametrize("method,params,field", [
    (p.CONVERSATION_GET, {"name": "int64", "afterSeq": 2**64}, "afterSeq"),
    (p.CONVERSATION_SUBSCRIBE, {"name": "int64", "afterSeq": -(2**63) - 1}, "afterSeq"),
    (p.CONVERSATION_LIST, {"limit": 2**64}, "limit"),
    (p.CONVERSATION_FORK, {"name": "int64", "newName": "int64-fork", "atSeq": 2**64}, "atSeq"),
], ids=["get-afterSeq", "subscribe-afterSeq", "list-limit", "fork-atSeq"])
def test_integers_beyond_int64_in_params_are_invalid_params(daemon, bystander, connect, method, params, field):
    """JSON has no integer limit but SQLite does: an integer beyond int64 is either served (as "after
    everything", "no limit") or refused as the client's error (-32602 naming the field), never -32603."""
    conn = connect()
    conn.send_request(p.CHAT_SEND, {"conversation": "int64", "text": "x"}, msg_id="setup")
    conn.reply("setup")
    msg = conn.reply(conn.send_request(method, params))
    if "error" in msg:
        assert msg["error"]["code"] == p.INVALID_PARAMS and field in msg["error"]["message"], msg
    still_works(conn)
    bystander.check()


@pytest.mark.parametrize("method,params,field", [
    (p.CONVERSATION_CREATE, {"name": "x", "bogus": 1}, "bogus"),
    (p.CHAT_SEND, {"conversation": "x", "text": "hi", "max_rounds": 2}, "max_rounds"),  # snake_case typo
    (p.CONVERSATION_GET, {"name": "x", "after": 3}, "after"),
])
def test_unknown_param_fields_name_the_field(daemon, bystander, connect, method, params, field):
    conn = connect()
    err = conn.expect_error(conn.send_request(method, params), p.INVALID_PARAMS)
    assert f"`{field}`" in err["message"], err
    bystander.check()


@pytest.mark.parametrize("method,params", [
    (p.CONVERSATION_GET, ["x"]),
    (p.CHAT_SEND, ["x", "hello"]),
])
def test_params_as_an_array_are_invalid_params(daemon, bystander, connect, method, params):
    """Positional params are refused (an empty array is taken as no params: Lua encodes {} as [])."""
    conn = connect()
    err = conn.expect_error(conn.send_request(method, params), p.INVALID_PARAMS)
    assert "named params" in err["message"], err
    bystander.check()


@pytest.mark.parametrize("params", ["x", 5, True], ids=["string", "number", "bool"])
def test_scalar_params_are_an_invalid_request(daemon, bystander, connect, params):
    conn = connect()
    conn.expect_error(conn.send_request(p.DAEMON_STATUS, params, msg_id=7), p.INVALID_REQUEST)
    bystander.check()


@pytest.mark.parametrize("msg_id", ["abc-1", "", "7", 42, 0, -7, 2**70, "\u00e9\u4e2d\U0001f600"],
                         ids=["string", "empty-string", "numeric-string", "int", "zero", "negative", "bigint",
                              "unicode"])
def test_string_and_number_ids_are_echoed_exactly(daemon, bystander, connect, msg_id):
    conn = connect()
    conn.send_request(p.MODELS_LIST, msg_id=msg_id)
    msg = conn.reply(msg_id)
    assert "echo" in [m["name"] for m in msg["result"]["models"]]
    conn.send_request("no/such/method", msg_id=msg_id)
    assert conn.reply(msg_id)["error"]["code"] == p.METHOD_NOT_FOUND
    bystander.check()


@pytest.mark.parametrize("msg_id", [True, 1.5, {"a": 1}, [1]], ids=["bool", "float", "object", "array"])
def test_ids_of_other_types_are_invalid_requests_with_null_id(daemon, bystander, connect, msg_id):
    conn = connect()
    conn.send({"jsonrpc": "2.0", "id": msg_id, "method": p.DAEMON_STATUS})
    conn.expect_error(None, p.INVALID_REQUEST)
    still_works(conn)
    bystander.check()


@pytest.mark.parametrize("envelope", [
    {"jsonrpc": "1.0", "id": 3, "method": p.DAEMON_STATUS},
    {"id": 3, "method": p.DAEMON_STATUS},
    {"jsonrpc": 2.0, "id": 3, "method": p.DAEMON_STATUS},
    {"jsonrpc": "2.0", "id": 3},
    {"jsonrpc": "2.0", "id": 3, "method": 12},
    {"jsonrpc": "2.0", "id": 3, "method": None},
], ids=["jsonrpc-1.0", "no-jsonrpc", "jsonrpc-number", "no-method", "method-number", "method-null"])
def test_invalid_envelopes_are_invalid_requests(daemon, bystander, connect, envelope):
    conn = connect()
    conn.send(envelope)
    err = conn.expect_error(3, p.INVALID_REQUEST)
    assert err["message"].startswith("invalid request"), err
    still_works(conn)
    bystander.check()


@pytest.mark.parametrize("value", [1, "x", None, True, [1, 2]], ids=["int", "string", "null", "bool", "array"])
def test_a_message_that_is_not_an_object(daemon, bystander, connect, value):
    conn = connect()
    conn.send(value)
    if value == [1, 2]:  # a batch of two non-objects: one array with two errors
        replies = conn.recv()
        assert type(replies) is list and len(replies) == 2, replies
        for r in replies:
            assert_valid_response(r)
            assert r["id"] is None and r["error"]["code"] == p.INVALID_REQUEST
    else:
        conn.expect_error(None, p.INVALID_REQUEST)
    still_works(conn)
    bystander.check()


# ---------------------------------------------------------------- batches
@pytest.mark.parametrize("mode", ["lsp", "line"])
def test_batch_of_mixed_valid_and_invalid_requests(daemon, bystander, connect, mode):
    conn = connect(mode)
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": p.DAEMON_STATUS},
        {"jsonrpc": "2.0", "id": "send", "method": p.CHAT_SEND,
         "params": {"conversation": "batch-demo", "text": "in a batch"}},
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},  # a notification: no reply
        {"jsonrpc": "2.0", "id": 2, "method": "no/such/method"},
        {"jsonrpc": "2.0", "method": "no/such/notification"},  # unknown notification: no reply either
        {"jsonrpc": "2.0", "id": 3, "method": p.CONVERSATION_GET, "params": {"name": 3}},
        {"jsonrpc": "1.0", "id": 4, "method": p.DAEMON_STATUS},
        17,
        {"jsonrpc": "2.0", "id": 5, "method": p.CONVERSATION_GET, "params": ["x"]},
        {"jsonrpc": "2.0", "id": 6, "method": p.CONVERSATION_GET, "params": {"name": "no-such-conversation"}},
        {"jsonrpc": "2.0", "id": 7.5, "method": p.DAEMON_STATUS},
        {"jsonrpc": "2.0", "id": 8, "method": p.MODELS_LIST},
    ]
    conn.send(batch)
    replies = conn.recv()
    assert type(replies) is list, replies
    for r in replies:
        assert_valid_response(r)
    by_id = {r["id"]: r for r in replies if r["id"] is not None}
    nulls = [r for r in replies if r["id"] is None]
    assert sorted(by_id, key=str) == sorted([1, "send", 2, 3, 4, 5, 6, 8], key=str), replies
    assert len(replies) == len(by_id) + len(nulls) == 10, replies
    assert by_id[1]["result"]["pid"] == daemon.proc.pid
    assert by_id["send"]["result"]["modelUsed"] == "echo"
    assert "in a batch" in by_id["send"]["result"]["message"]["text"]
    assert by_id[2]["error"]["code"] == p.METHOD_NOT_FOUND
    assert by_id[3]["error"]["code"] == p.INVALID_PARAMS and "name" in by_id[3]["error"]["message"]
    assert by_id[4]["error"]["code"] == p.INVALID_REQUEST
    assert by_id[5]["error"]["code"] == p.INVALID_PARAMS
    assert by_id[6]["error"]["code"] == p.CONVERSATION_NOT_FOUND
    assert "echo" in [m["name"] for m in by_id[8]["result"]["models"]]
    assert sorted(r["error"]["code"] for r in nulls) == [p.INVALID_REQUEST, p.INVALID_REQUEST]
    still_works(conn)  # and nothing else (a second array, a stray reply) arrived before this answer
    bystander.check()


def test_empty_batch_is_one_invalid_request(daemon, bystander, connect):
    conn = connect()
    conn.send([])
    msg = conn.recv()
    assert type(msg) is dict, msg  # a single error object, not an array
    assert_valid_response(msg)
    assert msg["id"] is None and msg["error"]["code"] == p.INVALID_REQUEST
    still_works(conn)
    bystander.check()


def test_batch_of_only_notifications_gets_no_reply(daemon, bystander, connect):
    conn = connect()
    conn.send([{"jsonrpc": "2.0", "method": "initialized"}, {"jsonrpc": "2.0", "method": "no/such"}])
    still_works(conn)  # the first thing to arrive is this reply, not an empty array
    bystander.check()


def test_duplicate_id_within_a_batch(daemon, bystander, connect):
    conn = connect()
    conn.send([
        {"jsonrpc": "2.0", "id": 1, "method": p.CHAT_SEND, "params": {"conversation": "dup", "text": "one"}},
        {"jsonrpc": "2.0", "id": 1, "method": p.DAEMON_STATUS},
    ])
    replies = conn.recv()
    assert type(replies) is list and len(replies) == 2, replies
    for r in replies:
        assert_valid_response(r)
        assert r["id"] == 1
    assert sorted("result" in r for r in replies) == [False, True], replies
    bystander.check()


# ---------------------------------------------------------------- responses and notifications from the client
def test_responses_from_the_client_to_nothing_are_ignored(daemon, bystander, connect):
    conn = connect()
    conn.send({"jsonrpc": "2.0", "id": "never-asked", "result": {"x": 1}})
    conn.send({"jsonrpc": "2.0", "id": 99, "error": {"code": -1, "message": "no"}})
    still_works(conn)
    bystander.check()


@pytest.mark.parametrize("error", [{"code": "x", "message": "m"}, {"code": 2**40}, "boom", {"message": 5}],
                         ids=["code-string", "code-huge", "error-string", "message-number"])
def test_malformed_error_responses_from_the_client_do_not_kill_the_connection(daemon, bystander, connect, error):
    conn = connect()
    conn.send({"jsonrpc": "2.0", "id": "zz", "error": error})
    still_works(conn)
    bystander.check()


def test_a_response_reusing_the_id_of_an_inflight_request_does_not_steal_its_reply(daemon, bystander, connect):
    conn = connect()
    words = " ".join(["word"] * 50)
    conn.send({"jsonrpc": "2.0", "id": 7, "method": p.CHAT_SEND,
               "params": {"conversation": "steal", "text": words,
                          "params": {"echoDelayMs": 1}}})
    conn.send({"jsonrpc": "2.0", "id": 7, "result": "not yours"})
    msg = conn.reply(7)
    assert "result" in msg and msg["result"]["modelUsed"] == "echo", msg
    still_works(conn)
    bystander.check()


def test_chat_send_as_a_notification_then_half_close_closes(daemon, bystander, connect):
    """A notification has no reply; the turn runs, and a half-closed connection is then closed."""
    conn = connect()
    conn.send({"jsonrpc": "2.0", "method": p.CHAT_SEND, "params": {"conversation": "fire-and-forget", "text": "x"}})
    conn.half_close()
    assert conn.read_until_eof() == []  # only notifications (turnStarted, deltas) before EOF
    got = bystander.conn.call(p.CONVERSATION_GET, {"name": "fire-and-forget"})
    assert [m["role"] for m in got["messages"]] == ["user", "assistant"]
    bystander.check()


@pytest.mark.parametrize("params", [{"id": [1]}, {"id": {"a": 1}}, {"id": None}, {"id": 424242}, {}, [3]],
                         ids=["id-array", "id-object", "id-null", "id-unknown", "no-id", "array"])
def test_odd_cancel_notifications_are_ignored(daemon, bystander, connect, params):
    conn = connect()
    conn.send({"jsonrpc": "2.0", "method": p.CANCEL_REQUEST, "params": params})
    still_works(conn)
    bystander.check()


def test_a_request_cancelled_in_the_same_read_is_answered_once_and_never_runs(daemon, bystander, connect):
    """The cancel is read with the request, before its handler's first step (whose code then never
    runs): the -32800 reply must still come, once, and the turn must leave nothing behind."""
    conn = connect()
    send = {"jsonrpc": "2.0", "id": 9, "method": p.CHAT_SEND,
            "params": {"conversation": "cancelled-unstarted", "text": "x", "params": {"echoDelayMs": 50}}}
    cancel = {"jsonrpc": "2.0", "method": p.CANCEL_REQUEST, "params": {"id": 9}}
    conn.send_raw(conn.frame(msgspec.json.encode(send)) + conn.frame(msgspec.json.encode(cancel)))
    error = conn.expect_error(9, p.REQUEST_CANCELLED)
    assert error["message"] == 'Request with id "9" is canceled'
    conn.half_close()
    assert conn.read_until_eof() == []  # no second answer to id 9
    assert not any(n["method"] == p.CHAT_TURN_STARTED for n in conn.notifications), conn.notifications
    listed = bystander.conn.call(p.CONVERSATION_LIST, {"limit": 1000})["conversations"]
    assert "cancelled-unstarted" not in [c["name"] for c in listed]
    bystander.check()


def test_an_id_reused_while_in_flight_does_not_lose_the_later_request(daemon, bystander, connect):
    """A client reuses an id before its first request is answered. The first to finish must not take the
    other's place in the table of requests in flight: after a half-close the daemon still waits for it."""
    conn = connect()
    for conversation, delay in (("reused-id-fast", 1), ("reused-id-slow", 300)):
        conn.send({"jsonrpc": "2.0", "id": 5, "method": p.CHAT_SEND,
                   "params": {"conversation": conversation, "text": "a few words", "params": {"echoDelayMs": delay}}})
    first = conn.reply(5)
    conn.half_close()
    rest = conn.read_until_eof()
    assert [m["id"] for m in rest] == [5], rest
    assert {first["result"]["conversation"], rest[0]["result"]["conversation"]} == {"reused-id-fast",
                                                                                    "reused-id-slow"}
    bystander.check()


def test_a_notification_with_scalar_params_is_an_invalid_request(daemon, bystander, connect):
    conn = connect()
    conn.send({"jsonrpc": "2.0", "method": p.CANCEL_REQUEST, "params": "x"})
    conn.expect_error(None, p.INVALID_REQUEST)  # no id to answer to, so the error carries id null
    still_works(conn)
    bystander.check()


# ---------------------------------------------------------------- a 50 MB frame
BIG = 50 * 1024 * 1024


def _hwm_kb(pid: int) -> int:
    """Peak resident set size of a process (VmHWM), in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _big_json(size: int) -> bytes:
    head = b'{"jsonrpc":"2.0","id":"big","method":"chat/send","params":{"conversation":"big","text":"'
    tail = b'"}}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def _send_in_chunks(conn: RawConn, data: bytes, chunk: int = 1 << 20) -> None:
    view = memoryview(data)
    for i in range(0, len(view), chunk):
        conn.sock.sendall(view[i : i + chunk])


def test_50mb_frame_is_refused_without_being_buffered(fresh_daemon, connect):
    daemon = fresh_daemon
    bystander = Bystander(daemon)
    pid = daemon.proc.pid
    conn = connect(to=daemon)
    still_works(conn)
    before = _hwm_kb(pid)
    body = _big_json(BIG)
    conn.send_raw(b"Content-Length: %d\r\n\r\n" % len(body))
    _send_in_chunks(conn, body)
    msg = conn.recv()  # the refusal (it may have been written long before the body finished)
    assert_valid_response(msg)
    assert msg["id"] is None and msg["error"]["code"] in OK_ERROR_CODES, msg
    assert str(p.MAX_FRAME) in msg["error"]["message"], msg
    still_works(conn)  # the stream resynchronised right after the skipped body
    grown_mb = (_hwm_kb(pid) - before) / 1024
    assert grown_mb < 10, f"daemon peak RSS grew by {grown_mb:.1f} MB for a refused 50 MB frame"
    got = bystander.conn.call(p.CONVERSATION_LIST, {})
    assert "big" not in [c["name"] for c in got["conversations"]]
    bystander.check()


def test_50mb_line_is_refused_without_being_buffered(fresh_daemon, connect):
    daemon = fresh_daemon
    bystander = Bystander(daemon)
    pid = daemon.proc.pid
    conn = connect("line", to=daemon)
    still_works(conn)
    before = _hwm_kb(pid)
    _send_in_chunks(conn, _big_json(BIG) + b"\n")
    msg = conn.recv()
    assert_valid_response(msg)
    assert msg["id"] is None and msg["error"]["code"] in OK_ERROR_CODES, msg
    assert str(p.MAX_FRAME) in msg["error"]["message"], msg
    still_works(conn)  # the rest of the long line was discarded up to its newline
    # A line's end is only known when it arrives, so up to MAX_FRAME (16 MiB) is held before refusing;
    # what must not happen is holding the whole 50 MB.
    grown_mb = (_hwm_kb(pid) - before) / 1024
    assert grown_mb < 35, f"daemon peak RSS grew by {grown_mb:.1f} MB for a refused 50 MB line"
    got = bystander.conn.call(p.CONVERSATION_LIST, {})
    assert "big" not in [c["name"] for c in got["conversations"]]
    bystander.check()


def test_huge_declared_content_length_is_refused_at_once(daemon, bystander, connect):
    conn = connect()
    conn.send_raw(b"Content-Length: 99999999999999999999\r\n\r\n{}")  # never sent; must not wait for it
    msg = conn.recv()
    assert msg["id"] is None and msg["error"]["code"] in OK_ERROR_CODES, msg
    conn.half_close()
    assert conn.read_until_eof() == []
    bystander.check()


def test_a_frame_of_exactly_the_limit_is_accepted(daemon, bystander, connect):
    conn = connect()
    head = b'{"jsonrpc":"2.0","id":"max","method":"daemon/status","params":{"pad":"'
    body = head + b"a" * (p.MAX_FRAME - len(head) - 3) + b'"}}'
    assert len(body) == p.MAX_FRAME
    conn.send_raw(b"Content-Length: %d\r\n\r\n" % len(body))
    _send_in_chunks(conn, body)
    assert conn.reply("max")["result"]["pid"] == daemon.proc.pid
    bystander.check()
