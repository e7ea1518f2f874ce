"""The conversation service: conversation CRUD and the turn loop (route, stream, commit, publish).

It knows nothing of sockets, JSON-RPC or HTTP. Clients reach it through the server layer, which hands
in an opaque `origin` for the caller and an `EventSink` that delivers notifications to the origin and
to every subscriber of a conversation.

Invariants:
- Turns on one conversation run one at a time, in arrival order (a FIFO lock per conversation).
- A turn commits in one store transaction after the reply is complete; a failed or cancelled turn
  commits nothing, so history never holds half a turn or an orphaned user message.
- Active conversations keep their history in memory; a turn reads O(1) rows to check it is current.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import Any, Protocol

import msgspec

from chatd import protocol as p
from chatd.errors import (
    AlreadyExists, ConversationNotFound, InvalidArgument, ShuttingDown, TurnFailed,
)
from chatd.models import ModelRegistry
from chatd.providers.base import (
    Finish, Provider, ProviderError, ProviderRequest, TextDelta, UsageEvent, cost_of,
)
from chatd.routing import LAST, Router
from chatd.store import Conversation, NewMessage, Store, TurnRecord

_CACHE_SIZE = 64


class EventSink(Protocol):
    def publish(self, conv_id: int, method: str, params: Any, origin: object | None = None) -> None: ...


class _State:
    """An active conversation's row and its history, kept in memory between turns."""

    __slots__ = ("conv", "messages", "lock", "task", "streaming")

    def __init__(self, conv: Conversation, messages: list[p.MessageOut]) -> None:
        self.conv = conv
        self.messages = messages
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        # the running turn: (turn id, user message, model, reply chunks so far)
        self.streaming: tuple[str, p.MessageOut, str, list[str]] | None = None


def info(conv: Conversation) -> p.ConversationInfo:
    return p.ConversationInfo(
        name=conv.name, system=conv.system, models=conv.models, model_weights=conv.model_weights,
        prefer_model=conv.prefer_model, params=conv.params, last_model=conv.last_model,
        message_count=conv.message_count, last_seq=conv.last_seq, created_at=conv.created_at,
        updated_at=conv.updated_at,
    )


def _check_name(name: str) -> None:
    if not p.valid_name(name):
        raise InvalidArgument(f"invalid conversation name {name!r}: 1-200 printable characters, no"
                              " leading or trailing spaces, not '*'")


class ConversationService:
    def __init__(
        self,
        store: Store,
        registry: ModelRegistry,
        providers: dict[str, Provider],
        events: EventSink,
        *,
        router: Router | None = None,
        default_models: list[str] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.providers = providers
        self.events = events
        self.router = router or Router()
        self.default_models = default_models or ["echo"]
        self._states: OrderedDict[int, _State] = OrderedDict()
        self._closing = False

    # ------------------------------------------------------------ conversations
    def lookup(self, name: str) -> Conversation:
        conv = self.store.get(name)
        if conv is None:
            raise ConversationNotFound(name)
        return conv

    def create(self, params: p.ConversationCreateParams) -> Conversation:
        _check_name(params.name)
        self._check_models(params.models, params.model_weights, params.prefer_model)
        if self.store.get(params.name) is not None:
            raise AlreadyExists(params.name)
        conv = self.store.create(
            params.name, system=params.system, models=params.models, model_weights=params.model_weights,
            prefer_model=params.prefer_model or LAST, params=params.params,
        )
        self.events.publish(conv.id, p.CONVERSATION_CHANGED, p.ConversationChanged(name=conv.name, kind="created"))
        return conv

    def get(self, name: str, after_seq: int = 0) -> tuple[Conversation, list[p.MessageOut]]:
        conv = self.lookup(name)
        state = self._states.get(conv.id)
        if state is not None and state.conv.last_seq == conv.last_seq:
            return conv, [m for m in state.messages if m.seq > after_seq]
        return conv, self.store.messages(conv.id, after_seq)

    def active_turn(self, name: str) -> p.ActiveTurn | None:
        conv = self.store.get(name)
        state = self._states.get(conv.id) if conv is not None else None
        if state is None or state.streaming is None:
            return None
        turn_id, user, model, chunks = state.streaming
        return p.ActiveTurn(turn_id=turn_id, user=user, model=model, text="".join(chunks))

    def list(self, query: str | None, limit: int) -> list[Conversation]:
        if limit < 1:
            raise InvalidArgument("limit must be at least 1")
        return self.store.list(query, min(limit, 10_000))

    def update(self, params: p.ConversationUpdateParams) -> Conversation:
        conv = self.lookup(params.name)
        fields: dict[str, Any] = {}
        if params.new_name is not None and params.new_name != conv.name:
            _check_name(params.new_name)
            if self.store.get(params.new_name) is not None:
                raise AlreadyExists(params.new_name)
            fields["name"] = params.new_name
        self._check_models(params.models, params.model_weights, params.prefer_model)
        for key in ("system", "models", "model_weights", "prefer_model", "params"):
            value = getattr(params, key)
            if value is not None:
                fields[key] = value
        conv = self.store.update(conv.id, **fields)
        self._forget(conv.id)
        renamed = "name" in fields
        self.events.publish(conv.id, p.CONVERSATION_CHANGED, p.ConversationChanged(
            name=conv.name, kind="renamed" if renamed else "updated", seq=conv.last_seq,
            old_name=params.name if renamed else None))
        return conv

    def delete(self, name: str) -> None:
        conv = self.lookup(name)
        self._cancel_running(conv.id)
        self.store.delete(conv.id)
        self._forget(conv.id)
        self.events.publish(conv.id, p.CONVERSATION_CHANGED, p.ConversationChanged(name=name, kind="deleted"))

    def clear(self, name: str) -> Conversation:
        conv = self.lookup(name)
        conv = self.store.clear(conv.id)
        self._forget(conv.id)
        self.events.publish(conv.id, p.CONVERSATION_CHANGED,
                            p.ConversationChanged(name=name, kind="cleared", seq=conv.last_seq))
        return conv

    def fork(self, params: p.ConversationForkParams) -> Conversation:
        source = self.lookup(params.name)
        _check_name(params.new_name)
        if self.store.get(params.new_name) is not None:
            raise AlreadyExists(params.new_name)
        fork = self.store.fork(source, params.new_name, params.at_seq)
        self.events.publish(fork.id, p.CONVERSATION_CHANGED, p.ConversationChanged(name=fork.name, kind="created"))
        return fork

    def _check_models(self, models: list[str] | None, weights: list[float] | None, prefer: str | None) -> None:
        for name in models or ():
            self.registry.get(name)
        if weights is not None:
            if models is None or len(weights) != len(models):
                raise InvalidArgument("modelWeights needs one weight per entry of models")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise InvalidArgument("modelWeights must be non-negative and not all zero")
        if prefer is not None and prefer not in ("last", "weighted"):
            self.registry.get(prefer)

    # ------------------------------------------------------------ turns
    async def send(self, params: p.ChatSendParams, origin: object | None = None) -> p.SendResult:
        if self._closing:
            raise ShuttingDown()
        parts = self._user_parts(params)
        if params.prefer_model is not None or params.models is not None:
            self._check_models(params.models, None, params.prefer_model)
        conv = self.store.get(params.conversation)
        if conv is None:
            conv = self.create(p.ConversationCreateParams(name=params.conversation))
        state = self._state(conv)
        async with state.lock:  # FIFO: turns run in arrival order
            state.task = asyncio.current_task()
            try:
                return await self._turn(self._refresh(state), parts, params, origin)
            finally:
                state.task = None

    def cancel(self, name: str) -> bool:
        conv = self.lookup(name)
        return self._cancel_running(conv.id)

    async def close(self) -> None:
        """Refuse new turns, cancel running ones and wait for them to unwind."""
        self._closing = True
        tasks = [s.task for s in self._states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    @property
    def active_turns(self) -> int:
        return sum(1 for s in self._states.values() if s.task is not None)

    def _user_parts(self, params: p.ChatSendParams) -> list[p.Part]:
        if (params.text is None) == (params.parts is None):
            raise InvalidArgument("chat/send needs exactly one of text or parts")
        parts = [p.TextPart(params.text)] if params.text is not None else list(params.parts or ())
        if not parts or not any(isinstance(x, p.TextPart) and x.text.strip() for x in parts):
            raise InvalidArgument("chat/send needs some text")
        return parts

    async def _turn(self, state: _State, parts: list[p.Part], params: p.ChatSendParams,
                    origin: object | None) -> p.SendResult:
        conv = state.conv
        turn_id = uuid.uuid4().hex
        started = time.time()
        user = p.MessageOut(seq=0, role="user", text="".join(x.text for x in parts if isinstance(x, p.TextPart)),
                            parts=parts, turn_id=turn_id, created_at=started)
        models = params.models or conv.models or self.default_models
        plan = self.router.plan(models, conv.model_weights if not params.models else None,
                                params.prefer_model or conv.prefer_model, conv.last_model)
        options = {**conv.params, **(params.params or {})}
        if params.max_new_tokens is not None:
            options["maxNewTokens"] = params.max_new_tokens
        if params.temperature is not None:
            options["temperature"] = params.temperature
        publish = self.events.publish
        publish(conv.id, p.CHAT_TURN_STARTED,
                p.TurnStarted(conversation=conv.name, turn_id=turn_id, user=user, model=plan[0]), origin)
        attempts: list[p.Attempt] = []
        try:
            for name in plan:
                spec = self.registry.get(name)
                request = ProviderRequest(model=spec, system=conv.system, messages=[*state.messages, user],
                                          options=options)
                t0 = time.perf_counter()
                chunks: list[str] = []
                state.streaming = (turn_id, user, name, chunks)
                usage, reason = p.Usage(), "stop"
                try:
                    async for event in self.providers[spec.provider].stream(request):
                        if type(event) is TextDelta:
                            chunks.append(event.text)
                            publish(conv.id, p.CHAT_DELTA,
                                    p.ChatDelta(conversation=conv.name, turn_id=turn_id, text=event.text), origin)
                        elif type(event) is UsageEvent:
                            usage = event.usage
                        elif type(event) is Finish:
                            reason = event.reason
                except ProviderError as err:
                    attempts.append(p.Attempt(model=name, outcome="error", error=str(err),
                                              latency_ms=(time.perf_counter() - t0) * 1000))
                    publish(conv.id, p.CHAT_ATTEMPT, p.ChatAttempt(
                        conversation=conv.name, turn_id=turn_id, model=name, outcome="error", reason=str(err)), origin)
                    continue
                attempts.append(p.Attempt(model=name, outcome="ok", latency_ms=(time.perf_counter() - t0) * 1000))
                return self._commit(state, user, "".join(chunks), spec, usage, reason, attempts, started, origin)
            reasons = "; ".join(f"{a.model}: {a.error}" for a in attempts)
            raise TurnFailed(f"every model failed ({reasons})", data={"attempts": [a for a in attempts]})
        except asyncio.CancelledError:
            publish(conv.id, p.CHAT_TURN_ENDED,
                    p.TurnEnded(conversation=conv.name, turn_id=turn_id, outcome="cancelled"), origin)
            raise
        except Exception as err:
            message = err.message if isinstance(err, TurnFailed) else "internal error"
            publish(conv.id, p.CHAT_TURN_ENDED,
                    p.TurnEnded(conversation=conv.name, turn_id=turn_id, outcome="failed", error=message), origin)
            raise
        finally:
            state.streaming = None

    def _commit(self, state: _State, user: p.MessageOut, text: str, spec, usage: p.Usage, reason: str,
                attempts: list[p.Attempt], started: float, origin: object | None) -> p.SendResult:
        conv = state.conv
        state.streaming = None
        finished = time.time()
        cost = cost_of(spec, usage)
        record = TurnRecord(id=user.turn_id or "", model=spec.name, provider=spec.provider, attempts=attempts,
                            usage=usage, cost=cost, finish_reason=reason, started_at=started, finished_at=finished)
        try:
            stored = self.store.commit_turn(conv.id, record, [
                NewMessage(role="user", parts=user.parts),
                NewMessage(role="assistant", parts=[p.TextPart(text)], model=spec.name),
            ])
        except LookupError:
            raise TurnFailed(f"conversation {conv.name!r} was deleted during the turn") from None
        state.messages.extend(stored)
        state.conv = msgspec.structs.replace(conv, last_seq=stored[-1].seq, last_model=spec.name,
                                             message_count=conv.message_count + len(stored), updated_at=finished)
        publish = self.events.publish
        publish(conv.id, p.CONVERSATION_CHANGED,
                p.ConversationChanged(name=conv.name, kind="turn", seq=stored[-1].seq, messages=stored), origin)
        publish(conv.id, p.CHAT_TURN_ENDED,
                p.TurnEnded(conversation=conv.name, turn_id=record.id, outcome="committed"), origin)
        return p.SendResult(
            conversation=conv.name, turn_id=record.id, message=stored[-1], model_used=spec.name, usage=usage,
            cost=cost, finish_reason=reason, attempts=attempts, latency_ms=(finished - started) * 1000,
        )

    # ------------------------------------------------------------ cache
    def _state(self, conv: Conversation) -> _State:
        state = self._states.get(conv.id)
        if state is None:
            state = _State(conv, self.store.messages(conv.id))
            self._states[conv.id] = state
            self._evict()
        else:
            self._states.move_to_end(conv.id)
        return state

    def _refresh(self, state: _State) -> _State:
        """Pick up what another process (a standalone engine on the same store) committed: O(1) when current."""
        current = self.store.get_by_id(state.conv.id)
        if current is None:
            raise ConversationNotFound(state.conv.name)
        if current.message_count < state.conv.message_count:  # cleared elsewhere
            state.messages = self.store.messages(current.id)
        elif current.last_seq != state.conv.last_seq:
            state.messages.extend(self.store.messages(current.id, state.conv.last_seq))
        state.conv = current
        return state

    def _evict(self) -> None:
        while len(self._states) > _CACHE_SIZE:
            for conv_id, state in self._states.items():
                if not state.lock.locked():
                    del self._states[conv_id]
                    break
            else:
                return

    def _forget(self, conv_id: int) -> None:
        state = self._states.get(conv_id)
        if state is not None and not state.lock.locked():
            del self._states[conv_id]
        elif state is not None:
            state.conv = self.store.get_by_id(conv_id) or state.conv
            state.messages = self.store.messages(conv_id) if state.conv else []

    def _cancel_running(self, conv_id: int) -> bool:
        state = self._states.get(conv_id)
        if state is not None and state.task is not None and not state.task.done():
            state.task.cancel()
            return True
        return False
