"""One running turn and one model reply: what the turn loop in `conversation.py` accumulates.

`Turn` holds the user message, the assistant and tool messages produced so far (committed together at
the end), the attempts, the summed usage and cost. `Reply` is what a single model call streamed back,
its parts in order (thinking, text, tool calls).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from chatd import protocol as p
from chatd.providers.base import ModelSpec, ProviderError, ToolSpec, cost_of
from chatd.store import Conversation, NewMessage
from chatd.store.sqlite import text_of
from chatd.tokens import TextCount, TokenCounter


def tokens_used(reply: "Reply") -> int:
    return reply.usage.input_tokens + reply.usage.output_tokens


class Reply:
    """What one model call produced: parts in order (thinking, text, tool calls), usage, finish reason.
    Streamed text is token-counted as it arrives (`add_text`), and each text part's count is handed to
    `counter` with it, so the next turn's window fitting finds the reply counted."""

    __slots__ = ("parts", "chunks", "usage", "reason", "counter", "_count")

    def __init__(self, counter: TokenCounter) -> None:
        self.parts: list[p.Part] = []
        self.chunks: list[str] = []
        self.usage = p.Usage()
        self.reason = "stop"
        self.counter = counter
        self._count = TextCount()

    def add_text(self, text: str) -> None:
        self.chunks.append(text)
        self._count.add(text)

    def flush_text(self) -> None:
        if self.chunks and (not self.parts or not isinstance(self.parts[-1], p.TextPart)):
            text = "".join(self.chunks)
            self.parts.append(p.TextPart(text))
            self.counter.remember(text, self._count.total())  # total() also starts the count over
            self.chunks = []  # a new list: `streaming` keeps the old one for late subscribers
        elif self.chunks:
            self.parts[-1] = p.TextPart(self.parts[-1].text + "".join(self.chunks))  # type: ignore[union-attr]
            self._count = TextCount()  # the joined text is counted when it is needed
            self.chunks = []


class Turn:
    """One running turn: the user message, the messages it has produced so far, and its accounting."""

    def __init__(self, conv: Conversation, parts: list[p.Part], origin: object | None,
                 options: dict[str, Any]) -> None:
        self.id = os.urandom(16).hex()  # 32 hex digits, as uuid4().hex, without building a UUID
        self.conv = conv
        self.origin = origin
        self.options = options
        self.started = time.time()
        self.user = p.MessageOut(seq=0, role="user", text=text_of(parts), parts=parts, turn_id=self.id,
                                 created_at=self.started)
        self.pending: list[NewMessage] = []  # assistant and tool messages after the user message
        self.tool_specs: list[ToolSpec] = []
        self.fitted: set = set()  # context-fitting notices already sent for this turn
        self.attempts: list[p.Attempt] = []
        self.usage = p.Usage()
        self.cost = 0.0
        self.reason = "stop"
        self.spec: ModelSpec

    def pending_out(self) -> list[p.MessageOut]:
        return [p.MessageOut(seq=0, role=m.role, text=text_of(m.parts), parts=m.parts, model=m.model,
                             turn_id=self.id) for m in self.pending]

    def add_reply(self, spec: ModelSpec, reply: Reply) -> None:
        self.spec = spec
        self.pending.append(NewMessage(role="assistant", parts=reply.parts or [p.TextPart("")], model=spec.name))
        u = reply.usage
        self.usage = p.Usage(input_tokens=self.usage.input_tokens + u.input_tokens,
                             output_tokens=self.usage.output_tokens + u.output_tokens,
                             cached_tokens=self.usage.cached_tokens + u.cached_tokens,
                             reasoning_tokens=self.usage.reasoning_tokens + u.reasoning_tokens)
        self.cost += cost_of(spec, u)
        self.reason = reply.reason

    def on_failure(self, events: Any) -> Callable[[str, ProviderError, str, float], None]:
        def report(model: str, err: ProviderError, action: str, delay_s: float = 0.0) -> None:
            events.publish(self.conv.id, p.CHAT_ATTEMPT, p.ChatAttempt(
                conversation=self.conv.name, turn_id=self.id, model=model, outcome="error", reason=str(err),
                next=action, delay_s=delay_s, kind=err.kind, status=err.status),
                self.origin)
        return report
