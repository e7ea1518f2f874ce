"""A turn's window fit counts only the messages added since the last turn (flat cost as history grows)."""

from __future__ import annotations

import sys

import pytest

from chatd import protocol as p
from chatd.context import Joined
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
    assert len(first.messages) == 2001 and list(first.messages)[-1] is user  # the first request is as it was
    # a replaced history (cleared elsewhere) is counted afresh, not trusted
    third, _ = manager._fit(conv, [_msg(1)], [user], spec, [], {}, "drop-oldest")
    assert len(third.messages) == 2 and third.tokens < first.tokens


def test_a_request_joins_the_history_and_the_running_turn_without_copying_the_history():
    """The fitted messages of a request that fits whole are a view of the cached history plus the running
    turn: a list in every way a provider reads one, its size independent of the history's, and unchanged
    by later appends to the cache."""
    from chatd.models import ModelRegistry
    from chatd.providers.base import ProviderRequest
    from chatd.providers.openai_chat import build_request

    history = [_msg(i) for i in range(1, 10_001)]
    current = [p.MessageOut(seq=0, role="user", text="now", parts=[p.TextPart("now")])]
    joined, flat = Joined(history, current), [*history, *current]
    assert sys.getsizeof(joined) < 100 < sys.getsizeof(flat) // 100
    assert joined == flat and len(joined) == 10_001 and list(joined) == flat
    assert list(reversed(joined)) == flat[::-1] and joined[-1] is current[0] and joined[-2] is history[-1]
    assert joined[0] is history[0] and joined[9_998:] == flat[9_998:] and joined[::5000] == flat[::5000]
    with pytest.raises(IndexError):
        joined[10_001]
    history.append(_msg(10_001))  # the next turn commits into the cache: this request stays what it was
    assert len(joined) == 10_001 and joined[-1] is current[0] and joined == flat
    spec = ModelRegistry().get("gpt-4o-mini")
    assert build_request(ProviderRequest(model=spec, system="s", messages=joined)) == build_request(
        ProviderRequest(model=spec, system="s", messages=flat))
