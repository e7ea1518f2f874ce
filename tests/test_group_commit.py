"""When the conversation service groups commits: turns in flight together share a COMMIT, and a turn with
no other in flight commits in place (no loop hop waiting for company that cannot come). Real SQLite file,
real service and echo provider, in-process; SQLite's own statement trace tells what ran."""

from __future__ import annotations

import asyncio

from chatd import protocol as p
from chatd.conversation import ConversationService
from chatd.models import ModelRegistry
from chatd.providers.echo import EchoProvider
from chatd.store import Store
from helpers import NoClients


class _GatedEcho(EchoProvider):
    """echo that holds every reply until the test opens the gate: turns in flight together, for certain."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def stream(self, request):  # type: ignore[override]
        self.waiting += 1
        await self.gate.wait()
        async for event in super().stream(request):
            yield event


def test_a_lone_turn_commits_in_place_and_turns_in_flight_together_share_commits(tmp_path):
    store = Store(str(tmp_path / "chatd.db"))
    echo = _GatedEcho()
    service = ConversationService(store, ModelRegistry(), {"echo": echo}, NoClients())
    for name in "abcdef":
        store.create(name, models=["echo"])
    statements: list[str] = []
    store._db.set_trace_callback(lambda sql: statements.append(sql.split(None, 1)[0].upper()))

    async def main() -> tuple[list[str], list[str]]:
        echo.gate.set()
        await service.send(p.ChatSendParams(conversation="a", text="alone"), origin=None)
        lone = statements.copy()
        statements.clear()
        echo.gate.clear()
        sends = [asyncio.ensure_future(service.send(p.ChatSendParams(conversation=n, text=f"with company {n}"),
                                                    origin=None)) for n in "bcdef"]
        while echo.waiting < 6:  # every turn is at its provider
            await asyncio.sleep(0)
        echo.gate.set()
        await asyncio.gather(*sends)
        return lone, statements.copy()

    lone, together = asyncio.run(main())
    assert "SAVEPOINT" not in lone and lone.count("COMMIT") == 1
    # the turns that finish while another is in flight are grouped: the last one may be alone by then
    assert together.count("SAVEPOINT") >= 4 and together.count("COMMIT") < 5, together
    assert [store.get(n).message_count for n in "abcdef"] == [2] * 6
    store.close()
