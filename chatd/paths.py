"""Where chatd keeps its socket, lock, database, config and logs; the only importer of platformdirs.

Resolution, first match wins:
- `CHATD_SOCKET` names the socket file; its directory also holds the lock and the spawn lock.
- `CHATD_HOME=<dir>` relocates everything: `<dir>/run/chatd.sock`, `<dir>/data/chatd.db`,
  `<dir>/config/config.toml`, `<dir>/logs/chatd.log`.
- otherwise the platform's user runtime, data, config and log directories, each with a `chatd` subfolder
  (on Linux the runtime one is `$XDG_RUNTIME_DIR/chatd` when that directory is private, found without
  platformdirs; see `_runtime_base`).

Clients import this module too (it imports nothing heavy), so a client and the daemon it starts
always agree on the socket.
"""

from __future__ import annotations

import os
import stat
import sys

_APP = "chatd"


class Paths:
    """Where chatd keeps its socket, store, config and logs (all str). A plain class, not a dataclass or
    a namedtuple: a one-shot client's start-up skips `inspect` (~5 ms) and `collections` (~2 ms).
    `home` is `CHATD_HOME` (or None); without it the data, config and log directories come from
    platformdirs when first asked for, so a client that only needs the socket never imports it
    (~22 ms of a one-shot `chatd call`)."""

    __slots__ = ("socket", "runtime_dir", "home")

    def __init__(self, socket: str, runtime_dir: str, home: str | None) -> None:
        self.socket, self.runtime_dir, self.home = socket, runtime_dir, home

    def __repr__(self) -> str:
        return f"Paths(socket={self.socket!r}, runtime_dir={self.runtime_dir!r}, home={self.home!r})"

    @property
    def lock(self) -> str:
        """Held by the serving daemon for its whole life: one daemon per socket."""
        return self.socket + ".lock"

    @property
    def spawn_lock(self) -> str:
        """Held briefly by a client that starts a daemon, so two clients never start two."""
        return self.socket + ".spawn"

    @property
    def data_dir(self) -> str:
        return self._dir("data", "user_data_dir")

    @property
    def config_dir(self) -> str:
        return self._dir("config", "user_config_dir")

    @property
    def log_dir(self) -> str:
        return self._dir("logs", "user_log_dir")

    @property
    def database(self) -> str:
        return os.path.join(self.data_dir, "chatd.db")

    @property
    def config_file(self) -> str:
        return os.path.join(self.config_dir, "config.toml")

    @property
    def log_file(self) -> str:
        return os.path.join(self.log_dir, "chatd.log")

    def _dir(self, under_home: str, platform_dir: str) -> str:
        if self.home:
            return os.path.join(self.home, under_home)
        import platformdirs

        return getattr(platformdirs, platform_dir)(_APP)


def resolve(env: os._Environ[str] | dict[str, str] | None = None) -> Paths:
    env = os.environ if env is None else env
    home = env.get("CHATD_HOME") or None
    if home:
        home = os.path.abspath(home)
        runtime = os.path.join(home, "run")
    else:
        runtime = os.path.join(_runtime_base(env), _APP)
    sock = env.get("CHATD_SOCKET")
    if sock:
        sock = os.path.abspath(sock)
        runtime = os.path.dirname(sock)
    else:
        sock = os.path.join(runtime, "chatd.sock")
    return Paths(socket=sock, runtime_dir=runtime, home=home)


def _runtime_base(env: os._Environ[str] | dict[str, str]) -> str:
    """The user's runtime directory. On Linux `$XDG_RUNTIME_DIR` when it is a private directory of
    ours (what a login session's /run/user/<uid> is), checked here without importing platformdirs;
    otherwise platformdirs' answer (its fallbacks, and macOS's own place). Every chatd process
    resolves it with this one function, so a client and the daemon it starts always agree."""
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if sys.platform.startswith("linux") and os.path.isabs(xdg) and _private_tree(xdg):
        return xdg
    import platformdirs
    import warnings

    # Without a usable XDG_RUNTIME_DIR platformdirs falls back (/run/user/<uid>, else a private
    # directory under the temporary one) and warns; the fallback is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return platformdirs.user_runtime_dir()


def _private_tree(path: str) -> bool:
    """`path` is a real directory (no symlink), ours, mode 0700, and no other user can replace it:
    every parent belongs to root or to us and is not writable by others (the sticky bit aside)."""
    uid = os.getuid()
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
            return False
        parent = os.path.dirname(path)
        while True:
            st = os.lstat(parent)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, uid):
                return False
            if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def ensure_private_dir(path: str) -> None:
    """Create `path` (and parents) with mode 0700 and insist it is ours and private."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to this user")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
