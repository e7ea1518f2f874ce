"""A turn's window fit counts only the messages added since the last turn (flat cost as history grows)."""

from __future__ import annotations

from chatd import protocol as p
from chatd.models import ModelRegistry
from chatd.store import Conversation, Store
from chatd.tokens import TokenCounter
from chatd.windowing import ContextManager


class CountingCounter(TokenCounter):
    def __init__(self) -> None:
        super().__init__()
        self.fresh = 0

    def message(self, msg, family):  # counts only real work: cache misses
        key = (msg.turn_id, msg.seq, family.name)
        if key not in self._cache:
            self.fresh += 1
        return super().message(msg, family)


def _msg(seq: int) -> p.MessageOut:
    role = "user" if seq % 2 else "assistant"
    return p.MessageOut(seq=seq, role=role, text=f"message {seq}", parts=[p.TextPart(f"message {seq}")],
                        turn_id=f"t{(seq + 1) // 2}")


def test_fit_counts_only_new_messages(tmp_path):
    registry = ModelRegistry()
    manager = ContextManager(Store(str(tmp_path / "c.db")), registry, {}, events=None)
    counter = manager.counter = CountingCounter()
    conv = Conversation(id=1, name="c", system=None, models=[], model_weights=None, prefer_model="last",
                        params={}, last_model=None, last_seq=0, message_count=0, created_at=0, updated_at=0)
    spec = registry.get("gpt-4o-mini")
    history = [_msg(i) for i in range(1, 2001)]
    user = p.MessageOut(seq=0, role="user", text="now", parts=[p.TextPart("now")])
    first, _ = manager._fit(conv, history, [user], spec, [], {}, "drop-oldest")
    assert first.fits and len(first.messages) == 2001
    history.extend([_msg(2001), _msg(2002)])  # one more turn committed
    lookups_before = counter.fresh
    second, _ = manager._fit(conv, history, [user], spec, [], {}, "drop-oldest")
    assert counter.fresh - lookups_before <= 3  # the two new messages (and the unsaved user message)
    assert second.tokens > first.tokens and len(second.messages) == 2003
    # a replaced history (cleared elsewhere) is counted afresh, not trusted
    third, _ = manager._fit(conv, [_msg(1)], [user], spec, [], {}, "drop-oldest")
    assert len(third.messages) == 2 and third.tokens < first.tokens
