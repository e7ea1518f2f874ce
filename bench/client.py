"""The load generator, run as its own process: a blocking Unix-socket JSON-RPC client with LSP framing.

The same client drives chatd and the baseline, so their difference is the server's. It prints one JSON
object on stdout.

    python -m bench.client ping SOCKET METHOD COUNT [PARAMS_JSON]   -> {"us": [round-trip per request]}
    python -m bench.client pipe SOCKET METHOD COUNT INFLIGHT        -> {"seconds": s, "count": n}
    python -m bench.client send SOCKET CONVERSATION COUNT           -> {"us": [chat/send round-trip per turn]}
"""

from __future__ import annotations

import socket
import sys
import time

import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
_WARMUP = 200


def _frame(msg: dict) -> bytes:
    body = _encode(msg)
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


class Conn:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = bytearray()

    def frames(self) -> list[bytes]:
        """Block until at least one complete frame has arrived; return every complete one."""
        out: list[bytes] = []
        buf = self.buf
        while not out:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                length = int(bytes(buf[:end]).partition(b":")[2])
                if len(buf) < end + 4 + length:
                    break
                out.append(bytes(buf[end + 4:end + 4 + length]))
                del buf[:end + 4 + length]
        return out

    def call(self, msg: dict) -> dict:
        """Send a request; return its reply, skipping notifications."""
        self.sock.sendall(_frame(msg))
        while True:
            for body in self.frames():
                reply = _decode(body)
                if reply.get("id") == msg["id"] and "method" not in reply:
                    return reply


def ping(path: str, method: str, count: int, params: object = None) -> dict:
    conn = Conn(path)
    clock = time.perf_counter_ns
    samples = []
    for i in range(count + _WARMUP):
        msg = {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
        t0 = clock()
        conn.call(msg)
        samples.append((clock() - t0) / 1000)
    return {"us": samples[_WARMUP:]}


def pipe(path: str, method: str, count: int, inflight: int) -> dict:
    """Keep `inflight` requests outstanding on one connection until `count` replies have arrived."""
    conn = Conn(path)
    frames = [_frame({"jsonrpc": "2.0", "id": i, "method": method, "params": None}) for i in range(count + _WARMUP)]
    conn.sock.sendall(b"".join(frames[:_WARMUP]))
    got = 0
    while got < _WARMUP:
        got += len(conn.frames())
    t0 = time.perf_counter()
    sent = min(inflight, count)
    conn.sock.sendall(b"".join(frames[_WARMUP:_WARMUP + sent]))
    done = 0
    while done < count:
        n = len(conn.frames())
        done += n
        more = min(n, count - sent)
        if more:
            conn.sock.sendall(b"".join(frames[_WARMUP + sent:_WARMUP + sent + more]))
            sent += more
    return {"seconds": time.perf_counter() - t0, "count": count}


def send(path: str, conversation: str, count: int) -> dict:
    conn = Conn(path)
    clock = time.perf_counter_ns
    samples = []
    for i in range(count):
        msg = {"jsonrpc": "2.0", "id": i, "method": "chat/send",
               "params": {"conversation": conversation, "text": f"turn {i}: hello there"}}
        t0 = clock()
        reply = conn.call(msg)
        samples.append((clock() - t0) / 1000)
        if "error" in reply:
            raise RuntimeError(f"chat/send failed: {reply['error']}")
    return {"us": samples}


def main(argv: list[str]) -> None:
    cmd, path = argv[0], argv[1]
    if cmd == "ping":
        out = ping(path, argv[2], int(argv[3]), _decode(argv[4]) if len(argv) > 4 else None)
    elif cmd == "pipe":
        out = pipe(path, argv[2], int(argv[3]), int(argv[4]))
    elif cmd == "send":
        out = send(path, argv[2], int(argv[3]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    sys.stdout.buffer.write(_encode(out))


if __name__ == "__main__":
    main(sys.argv[1:])
