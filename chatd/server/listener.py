"""Transports: the Unix socket (one per user, locked, private, peer-checked) and stdio.

Socket invariants: its directory is 0700 and ours; the socket is created 0600 (bound under umask 0177);
every accepted peer is checked with SO_PEERCRED to be this uid; one daemon per socket, enforced by an
flock held for the daemon's life. A socket file whose lock is free is stale and is removed.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import struct
import sys
from typing import Any, Callable

from chatd.paths import Paths, ensure_private_dir

log = logging.getLogger("chatd.listener")

_UNIX_PATH_MAX = 107


class AlreadyRunning(Exception):
    def __init__(self, pid: str, socket_path: str) -> None:
        super().__init__(f"chatd is already running (pid {pid or '?'}) on {socket_path}")
        self.pid = pid


def acquire_lock(paths: Paths) -> int:
    """Take the daemon lock or raise AlreadyRunning; returns the fd to keep open for the daemon's life."""
    ensure_private_dir(paths.runtime_dir)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise AlreadyRunning(pid, paths.socket) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def bind_socket(path: str) -> socket.socket:
    """Bind a 0600 listening socket at `path`, replacing a stale one (call only while holding the lock)."""
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise OSError(errno.ENAMETOOLONG, f"socket path longer than {_UNIX_PATH_MAX} bytes: {path}")
    try:
        os.unlink(path)  # we hold the lock, so whatever is there is stale
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(256)
    sock.setblocking(False)
    return sock


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class ConnectionProtocol(asyncio.Protocol):
    """asyncio glue: bytes in to a Connection, lifecycle events to the daemon."""

    def __init__(self, open_conn: Callable[[asyncio.BaseTransport], Any], close_conn: Callable[[Any], None],
                 check_peer: bool) -> None:
        self._open = open_conn
        self._close = close_conn
        self._check_peer = check_peer
        self.conn: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._check_peer:
            sock = transport.get_extra_info("socket")
            uid = peer_uid(sock)
            if uid != os.getuid():
                log.warning("refused a connection from uid %d", uid)
                transport.abort()
                return
        self.conn = self._open(transport)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.feed(data)

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_writing()

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_writing()

    def eof_received(self) -> bool:
        if self.conn is None:
            return False
        self.conn.eof()
        return True  # keep the transport open to answer requests still in flight

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self._close(self.conn)
            self.conn = None


async def open_stdio(protocol: ConnectionProtocol) -> asyncio.WriteTransport:
    """Attach `protocol` to this process's stdin/stdout; returns the stdout transport."""
    loop = asyncio.get_running_loop()
    w_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(os.dup(sys.stdout.fileno()), "wb"))
    # Nothing else may write to stdout: it carries the protocol.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    await loop.connect_read_pipe(lambda: protocol, os.fdopen(os.dup(sys.stdin.fileno()), "rb"))
    return w_transport  # type: ignore[return-value]
