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
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import msgspec

from chatd import protocol as p
from chatd.context import ContextSettings
from chatd.errors import (
    AlreadyExists, ChatdError, ConversationNotFound, InvalidArgument, ShuttingDown, StorageError, TurnFailed,
)
from chatd.models import ModelRegistry
from chatd.providers.base import (
    Finish, ModelSpec, Provider, ProviderError, ProviderRequest, TextDelta, ThinkingEvent, ToolCallEvent,
    ToolSpec, UsageEvent,
)
from chatd.ratelimit import estimate_chars
from chatd.routing import LAST, AllModelsFailed, Router, StallGuard
from chatd.store import Conversation, NewMessage, Store, TurnRecord
from chatd.store.sqlite import text_of
from chatd.tools import ToolRegistry
from chatd.tools.policy import Rule, parse_rules
from chatd.tools.runner import Approver, CallSite, not_run, run_calls
from chatd.turn import Reply, Turn, tokens_used

log = logging.getLogger("chatd.conversation")

# new messages are folded into the search index, the conversation rows' counters and the spend ledger
# (`Store.fold_pending`, schema v9) this long after a write, in the background
FOLD_AFTER_S = 0.5
# messages per background step: ~0.7 ms of the loop on one conversation, ~1.3 ms spread over 50 (500 took
# ~4 ms, a stall every turn in flight felt); with more pending the next step runs on the next loop
# iteration. A search folds any rest first.
FOLD_BUDGET = 100
from chatd.windowing import ContextManager, check_keep

_CACHE_SIZE = 64


DEFAULT_MAX_ROUNDS = 5
STATELESS_ID = -1  # the conversation id of a stateless turn: no subscribers, never stored


class EventSink(Approver, Protocol):
    """Delivers notifications (to the origin and the conversation's subscribers) and asks for approvals."""

    def publish(self, conv_id: int, method: str, params: Any, origin: object | None = None) -> None: ...


class _State:
    """An active conversation's row and its history, kept in memory between turns."""

    __slots__ = ("conv", "messages", "chars", "lock", "task", "streaming")

    def __init__(self, conv: Conversation, messages: list[p.MessageOut]) -> None:
        self.conv = conv
        self.messages: list[p.MessageOut] = []
        self.chars = 0  # total text length of `messages`, for O(1) request-size estimates
        self.set_messages(messages)
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        # the running turn: (turn id, user message, model, reply chunks so far)
        self.streaming: tuple[str, p.MessageOut, str, list[str]] | None = None

    def set_messages(self, messages: list[p.MessageOut]) -> None:
        self.messages = messages
        self.chars = sum(len(m.text) for m in messages)

    def add_messages(self, messages: list[p.MessageOut]) -> None:
        self.messages.extend(messages)
        self.chars += sum(len(m.text) for m in messages)


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
        tools: ToolRegistry | None = None,
        tool_rules: list[Rule] | None = None,
        context: ContextSettings | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.providers = providers
        self.events = events
        self.router = router or Router()
        self.default_models = default_models or ["echo"]
        self.tools = tools or ToolRegistry()
        self._running: set[_State] = set()  # states with a turn in flight, stored or stateless
        self.tool_rules = tool_rules or []
        self.context = ContextManager(store, registry, providers, events, context)  # windows, budgets, search
        self._states: OrderedDict[int, _State] = OrderedDict()
        self._closing = False
        self._fold_timer: asyncio.Handle | None = None

    # ------------------------------------------------------------ conversations
    def lookup(self, name: str) -> Conversation:
        conv = self.store.get(name)
        if conv is None:
            raise ConversationNotFound(name)
        return conv

    def create(self, params: p.ConversationCreateParams) -> Conversation:
        _check_name(params.name)
        self._check_models(params.models, params.model_weights, params.prefer_model)
        self._check_params(params.params)
        conv = self.store.create(  # AlreadyExists if the name is taken
            params.name, system=params.system, models=params.models, model_weights=params.model_weights,
            prefer_model=params.prefer_model or LAST, params=params.params,
        )
        self.events.publish(conv.id, p.CONVERSATION_CHANGED, p.ConversationChanged(name=conv.name, kind="created",
                                                                                   conversation=info(conv)))
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
        self._check_params(params.params)
        for key in ("system", "models", "model_weights", "prefer_model", "params"):
            value = getattr(params, key)
            if value is not None:
                fields[key] = value
        conv = self.store.update(conv.id, **fields)
        self._forget(conv.id)
        renamed = "name" in fields
        self.events.publish(conv.id, p.CONVERSATION_CHANGED, p.ConversationChanged(
            name=conv.name, kind="renamed" if renamed else "updated", seq=conv.last_seq,
            old_name=params.name if renamed else None, conversation=info(conv)))
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
                            p.ConversationChanged(name=name, kind="cleared", seq=conv.last_seq,
                                                  conversation=info(conv)))
        return conv

    def fork(self, params: p.ConversationForkParams) -> Conversation:
        source = self.lookup(params.name)
        _check_name(params.new_name)
        if self.store.get(params.new_name) is not None:
            raise AlreadyExists(params.new_name)
        fork = self.store.fork(source, params.new_name, params.at_seq)
        self.events.publish(fork.id, p.CONVERSATION_CHANGED, p.ConversationChanged(name=fork.name, kind="created",
                                                                                   conversation=info(fork)))
        return fork

    def import_conversation(self, params: p.ConversationImportParams) -> Conversation:
        """A conversation from an export document (`chatd export`), stored as it was: seqs, turn ids, times."""
        doc, name = params.document, params.name or params.document.conversation.name
        _check_name(name)
        self._check_models(doc.conversation.models, doc.conversation.model_weights, doc.conversation.prefer_model)
        self._check_params(doc.conversation.params)
        seqs = [m.seq for m in doc.messages]
        if any(b <= a for a, b in zip(seqs, seqs[1:])):
            raise InvalidArgument("the document's message seqs must be strictly increasing")
        if self.store.get(name) is not None:
            raise AlreadyExists(name)
        conv = self.store.import_conversation(name, doc)
        self.events.publish(conv.id, p.CONVERSATION_CHANGED, p.ConversationChanged(name=conv.name, kind="created",
                                                                                   conversation=info(conv)))
        return conv

    @staticmethod
    def _check_params(params: dict[str, Any] | None) -> None:
        if params and "toolPolicy" in params:
            try:
                parse_rules(params["toolPolicy"])
            except Exception as exc:
                raise InvalidArgument(f"invalid params.toolPolicy: {exc}") from None

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
    async def send(self, params: p.ChatSendParams, origin: object | None = None,
                   workspace: str | None = None) -> p.SendResult:
        if self._closing:
            raise ShuttingDown()
        parts = self._user_parts(params)
        self._check_params(params.params)
        if params.prefer_model is not None or params.models is not None or params.model_weights is not None:
            self._check_models(params.models, params.model_weights, params.prefer_model)
        if params.conversation is None:
            return await self._stateless(parts, params, origin, workspace)
        if params.history is not None or params.system is not None:
            raise InvalidArgument("history and system are for stateless turns (without a conversation);"
                                  " a stored conversation has its own")
        conv = self.store.get(params.conversation)
        if conv is None:
            try:
                conv = self.create(p.ConversationCreateParams(name=params.conversation))
                state = self._state(conv, fresh=True)
            except AlreadyExists:  # another process created it just now
                conv = self.lookup(params.conversation)
                state = self._state(conv)
        else:
            state = self._state(conv)
        waited = state.lock.locked()  # else the row just read is current: nothing ran since
        async with state.lock:  # FIFO: turns run in arrival order
            state.task = asyncio.current_task()
            self._running.add(state)
            try:
                return await self._turn(self._refresh(state, None if waited else conv), parts, params, origin,
                                        workspace)
            finally:
                state.task = None
                self._running.discard(state)

    async def _stateless(self, parts: list[p.Part], params: p.ChatSendParams, origin: object | None,
                         workspace: str | None) -> p.SendResult:
        """A turn on history the client holds: routed, streamed (to the sender only), tools and all, but
        nothing is stored. The client keeps the transcript; the result carries every new message."""
        now = time.time()
        conv = Conversation(id=STATELESS_ID, name="", system=params.system, models=[], model_weights=None,
                            prefer_model=LAST, params={}, last_model=None, last_seq=0, message_count=0,
                            created_at=now, updated_at=now)
        history = [p.MessageOut(seq=i, role=m.role, text=text_of(m.parts), parts=m.parts, model=m.model)
                   for i, m in enumerate(params.history or (), 1)]
        state = _State(conv, history)
        state.task = asyncio.current_task()
        self._running.add(state)
        try:
            return await self._turn(state, parts, params, origin, workspace)
        finally:
            self._running.discard(state)

    def cancel(self, name: str) -> bool:
        conv = self.lookup(name)
        return self._cancel_running(conv.id)

    async def close(self) -> None:
        """Refuse new turns, cancel running ones and wait for them to unwind."""
        self._closing = True
        if self._fold_timer is not None:
            self._fold_timer.cancel()
            self._fold_timer = None
        tasks = [s.task for s in self._running if s.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def start(self) -> None:
        """Once the loop runs: fold what the store found unfolded on opening (a process that died before it
        folded), as if it had just been written; reads count it meanwhile."""
        if self.store.pending:
            self._fold_soon()

    def _fold_soon(self) -> None:
        """Fold new messages soon, off the commit path (schema v9); one timer at a time."""
        if self._fold_timer is None and not self._closing:
            try:
                self._fold_timer = asyncio.get_running_loop().call_later(FOLD_AFTER_S, self._fold_step)
            except RuntimeError:  # no loop (a synchronous caller): the next search or the close folds them
                pass

    def _fold_step(self) -> None:
        self._fold_timer = None
        try:
            if self.store.fold_pending(FOLD_BUDGET) >= FOLD_BUDGET and not self._closing:
                # more pending: the next step once the loop has served what is ready in between
                self._fold_timer = asyncio.get_running_loop().call_soon(self._fold_step)
        except StorageError as err:
            log.warning("new messages not folded yet (the next step retries; reads count them meanwhile): %s", err)
        except Exception:  # a background step: never into the loop's handler
            log.exception("new messages not folded yet (the next step retries; reads count them meanwhile)")

    @property
    def active_turns(self) -> int:
        return len(self._running)

    def _user_parts(self, params: p.ChatSendParams) -> list[p.Part]:
        if (params.text is None) == (params.parts is None):
            raise InvalidArgument("chat/send needs exactly one of text or parts")
        parts = [p.TextPart(params.text)] if params.text is not None else list(params.parts or ())
        if not parts or not any(isinstance(x, p.TextPart) and x.text.strip() for x in parts):
            raise InvalidArgument("chat/send needs some text")
        return parts

    async def _turn(self, state: _State, parts: list[p.Part], params: p.ChatSendParams,
                    origin: object | None, workspace: str | None) -> p.SendResult:
        conv = state.conv
        turn = Turn(conv, parts, origin, self._options(conv, params))
        tools = self.tools.resolve(params.tools, origin) if params.tools else []
        turn.tool_specs = [ToolSpec(name=t.name, description=t.description, parameters=t.parameters) for t in tools]
        max_rounds = params.max_rounds or (DEFAULT_MAX_ROUNDS if tools else 1)
        if max_rounds < 1:
            raise InvalidArgument("maxRounds must be at least 1")
        models = params.models or conv.models or self.default_models
        plan = self.router.plan(models, params.model_weights if params.models else conv.model_weights,
                                params.prefer_model or conv.prefer_model, conv.last_model)
        self.context.check_budget(conv, state.messages, [turn.user], self.registry.get(plan[0]), turn.tool_specs,
                                  turn.options, turn.id, origin)  # a block raises here: nothing sent or stored
        publish = self.events.publish
        publish(conv.id, p.CHAT_TURN_STARTED,
                p.TurnStarted(conversation=conv.name, turn_id=turn.id, user=turn.user, model=plan[0],
                              client_ref=params.client_ref), origin)
        site = CallSite(conv_id=conv.id, conversation=conv.name, turn_id=turn.id, origin=origin, workspace=workspace)
        rules = (parse_rules(conv.params.get("toolPolicy")), self.tool_rules)
        try:
            for round_no in range(1, max_rounds + 1):
                model, reply = await self.router.run(
                    plan, lambda name: self._stream_once(state, turn, name), turn.on_failure(self.events),
                    turn.attempts, tokens=self._estimate(state, turn), usage=tokens_used)
                turn.add_reply(self.registry.get(model), reply)
                plan = [model] + [m for m in plan if m != model]  # the rest of the turn stays on it
                calls = [x for x in reply.parts if isinstance(x, p.ToolCallPart)]
                if not calls:
                    break
                if round_no == max_rounds:
                    results = not_run(calls, f"the agent loop reached maxRounds ({max_rounds})")
                    turn.reason = "max_rounds"
                else:
                    results = await run_calls(calls, {t.name: t for t in tools}, site, rules=rules,
                                              approver=self.events, publish=publish)
                turn.pending.append(NewMessage(role="tool", parts=list(results)))
            return await self._commit(state, turn)
        except AllModelsFailed as err:
            self._ended(turn, "failed", str(err))
            raise TurnFailed(str(err), data={"attempts": err.attempts}) from None
        except asyncio.CancelledError:
            self._ended(turn, "cancelled")
            raise
        except Exception as err:
            self._ended(turn, "failed", err.message if isinstance(err, ChatdError) else "internal error")
            raise
        finally:
            state.streaming = None

    @staticmethod
    def _estimate(state: _State, turn: Turn) -> int:
        """The request's tokens for the rate limiter, in O(1): corrected by the usage reported after."""
        pending = sum(len(m.text) for m in turn.pending_out())
        chars = state.chars + len(turn.user.text) + len(turn.conv.system or "") + pending
        return estimate_chars(chars, len(state.messages) + 1 + len(turn.pending),
                              turn.options.get("maxNewTokens"))

    def _options(self, conv: Conversation, params: p.ChatSendParams) -> dict[str, Any]:
        options = {**conv.params, **(params.params or {})}
        if params.max_new_tokens is not None:
            options["maxNewTokens"] = params.max_new_tokens
        if params.temperature is not None:
            options["temperature"] = params.temperature
        return options

    async def _stream_once(self, state: _State, turn: Turn, name: str) -> Reply:
        """One call to one model: stream its events, publishing text deltas as they arrive."""
        spec = self.registry.get(name)
        system, messages, raw = await self.context.prepare(  # fit the window; clients are told what was left out
            turn.conv, state.messages, [turn.user, *turn.pending_out()], spec, turn.tool_specs, turn.options,
            turn.id, turn.origin, turn.fitted)
        request = ProviderRequest(model=spec, system=system, tools=turn.tool_specs, messages=messages,
                                  options=turn.options)
        reply = Reply(self.context.counter)
        state.streaming = (turn.id, turn.user, name, reply.chunks)
        publish, conv_id, conv_name, add_text = self.events.publish, turn.conv.id, turn.conv.name, reply.add_text
        async with StallGuard(self.router.stall_timeout(name)) as guard:  # silence -> a "timeout" failure
            async for event in self.providers[spec.provider].stream(request):
                guard.tick()
                kind = type(event)
                if kind is TextDelta:
                    add_text(event.text)
                    publish(conv_id, p.CHAT_DELTA, p.ChatDelta(conversation=conv_name, turn_id=turn.id,
                                                               text=event.text), turn.origin)
                elif kind is ToolCallEvent:
                    reply.flush_text()
                    reply.parts.append(p.ToolCallPart(id=event.id, name=event.name, arguments=event.arguments))
                elif kind is ThinkingEvent:
                    reply.parts.append(p.ThinkingPart(text=event.text, signature=event.signature,
                                                      provider=spec.provider))
                elif kind is UsageEvent:
                    reply.usage = event.usage
                elif kind is Finish:
                    reply.reason = event.reason
        reply.flush_text()
        self.context.observe(spec, raw, reply.usage)  # learn the real token count
        return reply

    def _ended(self, turn: Turn, outcome: str, error: str | None = None) -> None:
        self.events.publish(turn.conv.id, p.CHAT_TURN_ENDED, p.TurnEnded(
            conversation=turn.conv.name, turn_id=turn.id, outcome=outcome, error=error), turn.origin)  # type: ignore[arg-type]

    async def _commit(self, state: _State, turn: Turn) -> p.SendResult:
        conv = state.conv
        state.streaming = None
        finished = time.time()
        spec = turn.spec
        if conv.id == STATELESS_ID:
            produced = [msgspec.structs.replace(m, seq=0, created_at=finished) for m in turn.pending_out()]
            self._ended(turn, "committed")
            return p.SendResult(
                conversation=None, turn_id=turn.id, message=produced[-1], model_used=spec.name, usage=turn.usage,
                cost=turn.cost, finish_reason=turn.reason, attempts=turn.attempts,
                latency_ms=(finished - turn.started) * 1000, messages=produced)
        record = TurnRecord(id=turn.id, model=spec.name, provider=spec.provider, attempts=turn.attempts,
                            usage=turn.usage, cost=turn.cost, finish_reason=turn.reason,
                            started_at=turn.started, finished_at=finished)
        messages = [NewMessage(role="user", parts=turn.user.parts), *turn.pending]
        try:
            if self.active_turns == 1:  # no other turn could share a COMMIT: skip the group's loop hops
                stored = self.store.commit_turn(conv.id, record, messages)
            else:
                stored = await self.store.commit_turn_grouped(conv.id, record, messages)
        except LookupError:
            raise TurnFailed(f"conversation {conv.name!r} was deleted during the turn") from None
        state.add_messages(stored)
        self._fold_soon()
        state.conv = msgspec.structs.replace(conv, last_seq=stored[-1].seq, last_model=spec.name,
                                             message_count=conv.message_count + len(stored), updated_at=finished)
        self.events.publish(conv.id, p.CONVERSATION_CHANGED, p.ConversationChanged(
            name=conv.name, kind="turn", seq=stored[-1].seq, messages=stored, usage=turn.usage, cost=turn.cost,
            conversation=info(state.conv)), turn.origin)
        self._ended(turn, "committed")
        return p.SendResult(
            conversation=conv.name, turn_id=turn.id, message=stored[-1], model_used=spec.name, usage=turn.usage,
            cost=turn.cost, finish_reason=turn.reason, attempts=turn.attempts,
            latency_ms=(finished - turn.started) * 1000, messages=stored[1:],
        )

    # ------------------------------------------------------------ context windows (chatd/windowing.py)
    def _next_model(self, conv: Conversation | None, model: str | None = None) -> ModelSpec:
        """The model a send would most likely use: `model`, the sticky last one, else the first listed."""
        if model:
            return self.registry.get(model)
        models = (conv.models if conv else None) or self.default_models
        if conv is not None and conv.last_model in models and conv.prefer_model == LAST:
            return self.registry.get(conv.last_model)  # type: ignore[arg-type]
        return self.registry.get(models[0])

    def _history(self, conv: Conversation) -> list[p.MessageOut]:
        state = self._states.get(conv.id)
        if state is not None and state.conv.last_seq == conv.last_seq:
            return state.messages
        return self.store.messages(conv.id)

    def context_info(self, conv: Conversation) -> p.ContextInfo:
        return self.context.info(conv, self._history(conv), self._next_model(conv))

    def estimate(self, params: p.ChatEstimateParams, origin: object | None = None) -> p.EstimateResult:
        conv = self.store.get(params.conversation) if params.conversation else None
        tools = self.tools.resolve(params.tools, origin) if params.tools else []
        specs = [ToolSpec(name=t.name, description=t.description, parameters=t.parameters) for t in tools]
        options = dict(conv.params) if conv else {}
        if params.max_new_tokens:
            options["maxNewTokens"] = params.max_new_tokens
        return self.context.estimate(conv, self._history(conv) if conv else [], params.text,
                                     self._next_model(conv, params.model), specs, options)

    async def compact(self, params: p.ConversationCompactParams) -> p.CompactResult:
        """Summarise all but the last turns now; the turns stay stored, the summary is sent from now on."""
        check_keep(params.keep_turns)
        state = self._state(self.lookup(params.name))
        async with state.lock:  # never beside a running turn
            conv = self._refresh(state).conv
            try:
                comp = await self.context.compact(conv, state.messages, self._next_model(conv), params.model,
                                                  params.keep_turns)
            except ProviderError as err:
                raise TurnFailed(f"the summary failed: {err}") from None
        if comp is None:
            return p.CompactResult(conversation=conv.name, compacted=False)
        return p.CompactResult(conversation=conv.name, compacted=True, upto_seq=comp.upto_seq, summary=comp.summary,
                               model=comp.model, tokens_before=comp.tokens_before, tokens_after=comp.tokens_after)

    # ------------------------------------------------------------ cache
    def _state(self, conv: Conversation, fresh: bool = False) -> _State:
        """The cached state of `conv`, loading its history on a miss (none to load when `fresh`: just created)."""
        state = self._states.get(conv.id)
        if state is None:
            state = _State(conv, [] if fresh else self.store.messages(conv.id))
            self._states[conv.id] = state
            self._evict()
        else:
            self._states.move_to_end(conv.id)
        return state

    def _refresh(self, state: _State, current: Conversation | None = None) -> _State:
        """Pick up what another process (a standalone engine on the same store) committed: O(1) when current.
        `current` is the conversation's row if the caller has just read it."""
        current = current or self.store.get_by_id(state.conv.id)
        if current is None:
            raise ConversationNotFound(state.conv.name)
        if current.message_count < state.conv.message_count:  # cleared elsewhere
            state.set_messages(self.store.messages(current.id))
        elif current.last_seq != state.conv.last_seq:
            state.add_messages(self.store.messages(current.id, state.conv.last_seq))
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
            state.set_messages(self.store.messages(conv_id) if state.conv else [])

    def _cancel_running(self, conv_id: int) -> bool:
        state = self._states.get(conv_id)
        if state is not None and state.task is not None and not state.task.done():
            state.task.cancel()
            return True
        return False
