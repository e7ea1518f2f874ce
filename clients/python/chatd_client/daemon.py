"""Finding the user's daemon, and starting it when none runs (once, even when many clients race)."""

from __future__ import annotations

import _socket  # not `socket`: a one-shot command skips importing enum and selectors
import fcntl
import os
import select
import sys
import time

from chatd.paths import Paths, ensure_private_dir, resolve

START_TIMEOUT = 15.0


class DaemonUnavailable(Exception):
    pass


def _can_connect(path: str) -> bool:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def ensure_daemon(paths: Paths | None = None, *, autostart: bool = True) -> str:
    """Return the socket path of a running daemon, starting one in the background if needed.

    Two clients starting at once serialise on the spawn lock: the second finds the first's daemon.
    The new daemon reports readiness through a pipe, so there is no polling.
    """
    paths = paths or resolve()
    if _can_connect(paths.socket):
        return paths.socket
    if not autostart:
        raise DaemonUnavailable(f"no chatd daemon is listening on {paths.socket} (start one with `chatd serve`)")
    ensure_private_dir(paths.runtime_dir)
    fd = os.open(paths.spawn_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _can_connect(paths.socket):
            return paths.socket
        _spawn(paths)
        return paths.socket
    finally:
        os.close(fd)


def _spawn(paths: Paths) -> None:
    import subprocess  # only when a daemon must be started: a one-shot `chatd call` skips its import

    read_end, write_end = os.pipe()
    env = dict(os.environ)
    env["CHATD_SOCKET"] = paths.socket
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatd", "serve", "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(write_end,), start_new_session=True, env=env, close_fds=True,
        )
    finally:
        os.close(write_end)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
                raise DaemonUnavailable(f"chatd did not start within {START_TIMEOUT:.0f}s; see {paths.log_file}")
            chunk = os.read(read_end, 64)
            if not chunk:
                code = proc.poll()
                if _can_connect(paths.socket):  # another daemon won the lock: fine
                    return
                raise DaemonUnavailable(f"chatd exited (status {code}) before it was ready; see {paths.log_file}")
            data += chunk
    finally:
        os.close(read_end)
