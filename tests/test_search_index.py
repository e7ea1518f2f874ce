"""The search index is kept off the commit path (schema v4): the conversation service indexes new messages
in the background a moment after a write, in bounded steps, and a search indexes whatever is still pending.
Real SQLite file, real service and echo provider, in-process; the service's own timer runs the steps."""

from __future__ import annotations

import asyncio

from chatd import conversation
from chatd import protocol as p
from chatd.conversation import ConversationService
from chatd.models import ModelRegistry
from chatd.providers.echo import EchoProvider
from chatd.store import Store
from chatd.store.search import ContextStore
from helpers import NoClients


def _indexed(store: Store) -> int:
    """Messages in the index (one docsize row each; the index keeps no text, so it cannot be counted)."""
    return store._db.execute("SELECT count(*) FROM message_fts_docsize").fetchone()[0]


def test_the_service_indexes_new_messages_in_the_background_in_bounded_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(conversation, "FOLD_AFTER_S", 0.0)  # the step's delay, not its work
    monkeypatch.setattr(conversation, "FOLD_BUDGET", 4)
    store = Store(str(tmp_path / "chatd.db"))
    service = ConversationService(store, ModelRegistry(), {"echo": EchoProvider()}, NoClients())

    async def main() -> tuple[list[int], list[int]]:
        service.create(p.ConversationCreateParams(name="bg", models=["echo"]))
        seen = []
        for word in ("quokka", "wombat", "numbat"):
            await service.send(p.ChatSendParams(conversation="bg", text=word))
            seen.append(_indexed(store))  # the commit itself indexed nothing new
            while service._fold_timer is not None:  # until the service's own steps have run
                await asyncio.sleep(0)
            seen.append(_indexed(store))
        # a long delay from here on: the first step is run by hand, the rest must follow on the loop's
        # next iterations without waiting for the delay again
        monkeypatch.setattr(conversation, "FOLD_AFTER_S", 60.0)
        for word in ("bilby", "quoll", "dingo"):  # 6 messages waiting
            await service.send(p.ChatSendParams(conversation="bg", text=word))
        steps = [_indexed(store)]
        service._fold_timer.cancel()
        service._fold_step()
        spins = 0
        while spins < 100:
            if _indexed(store) != steps[-1]:
                steps.append(_indexed(store))
            if service._fold_timer is None:
                break
            await asyncio.sleep(0)
            spins += 1
        service.fork(p.ConversationForkParams(name="bg", new_name="bg-copy"))  # folds its 12 copies itself
        steps.append(_indexed(store))
        assert service._fold_timer is None
        await service.close()
        return seen, steps

    seen, steps = asyncio.run(main())
    assert seen == [0, 2, 2, 4, 4, 6]
    assert steps == [6, 10, 12, 24]  # a step of 4 (the budget), the loop served, then the other 2 at once
    hits = ContextStore(store).search("wombat")
    assert sorted((h.conversation, h.seq) for h in hits) == [("bg", 3), ("bg", 4), ("bg-copy", 3), ("bg-copy", 4)]
    assert store.fold_pending() == 0
