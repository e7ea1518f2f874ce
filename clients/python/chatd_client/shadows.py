"""Shadows: hidden daemon-side conversations that mirror a script's local `Conversation` for tool loops.

The daemon runs the agent loop only on a stored conversation, and cannot (yet) be handed a history. So a
local conversation that needs tools gets a shadow named `.chatd_client/<pid>/<id>`: each call sends only
the new user message, and the shadow's reply messages (tool calls, results, answer) come back. The
shadow continues while the local history still extends what it holds (compared by message fingerprints);
otherwise a new one starts, seeded with the earlier turns as a transcript in its system prompt (lossy,
until the daemon can load a history). A shadow is deleted when its conversation is garbage, when the
client closes, at exit, or (left by a crashed process) by the next client that connects.
"""

from __future__ import annotations

import os
import uuid
import weakref
from typing import Any

from chatd import protocol as p
from chatd_client.connection import Client, RpcError
from chatd_client.conversation import Conversation, Message
from chatd_client.session import Session

PREFIX = ".chatd_client/"

_LIVE: dict[str, set[str]] = {}  # socket -> shadow names this process must delete before it exits
_SWEPT: set[str] = set()  # sockets whose stale shadows this process has cleared


class Shadow:
    __slots__ = ("name", "conv", "system", "fingerprints", "last_seq", "last_model")

    def __init__(self, name: str, conv: Conversation, system: str | None) -> None:
        self.name = name
        self.conv = weakref.ref(conv)
        self.system = system
        self.fingerprints: list[tuple[Any, ...]] = []  # of the local messages the shadow holds
        self.last_seq = 0
        self.last_model: str | None = None


class Shadows:
    """The shadows of one LLMClient, by local conversation."""

    def __init__(self) -> None:
        self._by_conv: dict[int, Shadow] = {}

    def __bool__(self) -> bool:
        return bool(self._by_conv)

    def names(self) -> list[str]:
        return [s.name for s in self._by_conv.values()]

    async def for_turn(self, session: Session, socket: str, conv: Conversation, system: str | None,
                       history: list[Message], create: dict[str, Any]) -> Shadow:
        """The shadow that holds exactly `history` for `conv`, or a new one (`create`: its settings)."""
        for stale in [s for s in self._by_conv.values() if s.conv() is None]:
            await self.drop(session, socket, stale)
        prints = [m.fingerprint() for m in history]
        shadow = self._by_conv.get(id(conv))
        if shadow is not None and shadow.conv() is conv and shadow.system == system \
                and shadow.fingerprints == prints:
            return shadow
        if shadow is not None:
            await self.drop(session, socket, shadow)
        shadow = Shadow(f"{PREFIX}{os.getpid()}/{uuid.uuid4().hex[:12]}", conv, system)
        shadow.fingerprints = prints
        seeded = system
        if history:
            transcript = "\n".join(f"{m.role}: {m.completion or _describe(m)}" for m in history)
            seeded = ((system + "\n\n") if system else "") + \
                f"The conversation so far (the latest user message follows):\n{transcript}"
        params = {"name": shadow.name, **create}
        if seeded:
            params["system"] = seeded
        await session.request(p.CONVERSATION_CREATE, params)
        self._by_conv[id(conv)] = shadow
        _LIVE.setdefault(socket, set()).add(shadow.name)
        return shadow

    async def drop(self, session: Session, socket: str, shadow: Shadow) -> None:
        for key, value in list(self._by_conv.items()):
            if value is shadow:
                del self._by_conv[key]
        _LIVE.get(socket, set()).discard(shadow.name)
        try:
            await session.request(p.CONVERSATION_DELETE, {"name": shadow.name})
        except RpcError:
            pass

    async def forget(self, session: Session, socket: str, conv: Conversation) -> None:
        shadow = self._by_conv.get(id(conv))
        if shadow is not None and shadow.conv() is conv:
            await self.drop(session, socket, shadow)

    async def drop_all(self, session: Session, socket: str) -> None:
        for shadow in list(self._by_conv.values()):
            await self.drop(session, socket, shadow)

    def delete_now(self, socket: str) -> None:
        """Delete every shadow with a blocking connection (when no event loop is left to use)."""
        names = self.names()
        self._by_conv.clear()
        if names:
            delete(socket, names)


def delete(socket: str, names: list[str]) -> None:
    try:
        with Client(socket, timeout=5) as c:
            for name in names:
                try:
                    c.request(p.CONVERSATION_DELETE, {"name": name})
                except RpcError:
                    pass
                _LIVE.get(socket, set()).discard(name)
    except OSError:
        pass


def delete_live() -> None:
    """At exit: whatever shadows this process still has."""
    for socket, names in list(_LIVE.items()):
        if names:
            delete(socket, list(names))


async def sweep_stale(session: Session, socket: str) -> None:
    """Once per socket and process: delete shadows whose process died before it could (crash, kill -9)."""
    if socket in _SWEPT:
        return
    _SWEPT.add(socket)
    try:
        found = await session.request(p.CONVERSATION_LIST, {"query": PREFIX, "limit": 1000})
    except RpcError:
        return
    for info in found.get("conversations", ()):
        name = info["name"]
        pid = name[len(PREFIX):].split("/", 1)[0] if name.startswith(PREFIX) else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                await session.request(p.CONVERSATION_DELETE, {"name": name})
            except RpcError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(message: Message) -> str:
    calls = [f"{c.name}({p.encode(c.arguments).decode()})" for c in message.tool_calls]
    results = [f"{r.name} -> {r.output}" for r in message.tool_results]
    return "; ".join(calls + results) or "[no text]"
