"""A program on a real pseudo-terminal, as a user runs it: keystrokes in, the terminal's output out.

The program gets the pty as its controlling terminal, so Ctrl-C (\x03) reaches it as SIGINT through the
line discipline, exactly as from a keyboard. `expect` waits on output (a condition variable fed by a
reader thread), never on time.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios
import threading
import time

_ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]?|[()][A-Za-z0-9]|[=>]|$)")


def plain(raw: str) -> str:
    """The output without escape sequences or carriage returns (text as a reader sees it, rewrites included)."""
    return _ANSI.sub("", raw).replace("\r", "")


class PtyProgram:
    def __init__(self, argv: list[str], env: dict[str, str], cols: int = 100, rows: int = 40) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**env, "TERM": "xterm-256color", "INPUTRC": "/dev/null"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.fd = master
        self.raw = ""
        self.pos = 0  # expect() searches the plain text from here
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        data = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                data += chunk
                self.raw = data.decode(errors="replace")
                self._cond.notify_all()

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def text(self) -> str:
        with self._cond:
            return plain(self.raw)

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match:
        """Wait until `pattern` (a regex) appears in the plain output after the last match; move past it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = regex.search(plain(self.raw), self.pos)
                if found:
                    self.pos = found.end()
                    return found
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    raise AssertionError(f"{pattern!r} not shown; the screen so far:\n{plain(self.raw)[-3000:]}")
                self._cond.wait(remaining)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self.fd)
        except OSError:
            pass
