"""Test helpers: a real `chatd serve` subprocess on a private CHATD_HOME, and socket clients for it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from chatd.paths import Paths, resolve


@dataclass
class DaemonProc:
    home: str
    env: dict[str, str]
    paths: Paths
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def socket(self) -> str:
        return self.paths.socket

    def start(self, timeout: float = 15.0) -> "DaemonProc":
        read_end, write_end = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatd", "serve", "--ready-fd", str(write_end), *self.extra_args],
            env=self.env, pass_fds=(write_end,), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], timeout)
            line = os.read(read_end, 64) if ready else b""
        finally:
            os.close(read_end)
        if line != b"ready\n":
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError(f"daemon did not start: {err.decode(errors='replace')}")
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        try:
            with open(self.paths.log_file) as f:
                return f.read()
        except FileNotFoundError:
            return ""


def make_env(home: str, **extra: str) -> dict[str, str]:
    # No real keys or endpoints leak in from the developer's shell: tests are offline and deterministic.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHATD_") and not k.endswith(("_API_KEY", "_BASE_URL"))}
    env["CHATD_HOME"] = home
    env.update(extra)
    return env


def new_daemon(tmp_path: Any, **extra_env: str) -> DaemonProc:
    home = str(tmp_path / "home")
    env = make_env(home, **extra_env)
    return DaemonProc(home=home, env=env, paths=resolve(env))


class NoClients:
    """The conversation service's events with no client connected: nothing published, nothing approved."""

    def publish(self, conv_id: int, method: str, params: Any, origin: object | None = None) -> None:
        pass

    async def approve(self, *args: Any) -> tuple[bool, str]:
        return False, "no client"


def fill_volume(path: str) -> None:
    """Write zeros to `path` until its volume is full (a small tmpfs in the full-disk tests)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:  # unbuffered: a buffered file's close would retry the last partial write and raise ENOSPC again
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_and_die(path: str, conversation: str, text: str) -> None:
    """A process that commits a one-message turn (2 tokens in, 3 out, cost 0.5) to `conversation` in the
    store at `path`, creating it if need be, and dies before it folds (`os._exit`: no `close`)."""
    code = ("import os, sys, time\n"
            "from chatd import protocol as p\n"
            "from chatd.store import NewMessage, Store, TurnRecord\n"
            "s = Store(sys.argv[1]); c = s.get(sys.argv[2]) or s.create(sys.argv[2]); now = time.time()\n"
            "s.commit_turn(c.id, TurnRecord(id='t', model='echo', provider='echo', attempts=[], usage=p.Usage("
            "input_tokens=2, output_tokens=3), cost=0.5, finish_reason='stop', started_at=now, finished_at=now),"
            " [NewMessage(role='user', parts=[p.TextPart(sys.argv[3])])])\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, path, conversation, text], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll a cheap predicate (an observable state, never elapsed time) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
