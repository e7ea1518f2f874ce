"""The service side of context management: fits each request before it is sent, summarises with a
cheaper model, records compactions, checks budgets, and answers estimates. `chatd.context` holds the
pure strategies; this module adds the store, the providers and the notifications.

Invariants:
- Nothing is cut silently: whenever a request leaves something out, `chat/contextFitted` says what.
- History is never rewritten: a summary is a compaction record beside the turns it stands for.
- A blocked budget raises before the turn starts, so nothing is published or committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Iterable

from chatd import protocol as p
from chatd.context import (
    SUMMARY_PROMPT, Budget, ContextSettings, Fit, clip, fit, reserve_for, system_with, transcript,
)
from chatd.errors import InvalidArgument, LimitExceeded
from chatd.models import ModelRegistry
from chatd.providers.base import ModelSpec, ProviderError, ProviderRequest, TextDelta, UsageEvent, cost_of
from chatd.store import Conversation, Store
from chatd.store.search import Compaction, ContextStore
from chatd.tokens import TokenCounter, family_of, text_tokens


class ContextManager:
    def __init__(self, store: Store, registry: ModelRegistry, providers: dict[str, Any], events: Any,
                 settings: ContextSettings | None = None) -> None:
        self.db = ContextStore(store)
        self.registry = registry
        self.providers = providers
        self.events = events
        self.settings = settings or ContextSettings()
        self.counter = TokenCounter()
        self._totals: dict[tuple[int, str], tuple[int, int, int]] = {}  # (conv, family) -> (n, last seq, tokens)

    # ------------------------------------------------------------ settings
    def strategy(self, conv: Conversation | None) -> str:
        wanted = (conv.params.get("contextStrategy") if conv else None) or self.settings.strategy
        return wanted if wanted in ("drop-oldest", "clear-tool-results", "summarize") else self.settings.strategy

    def _budget(self, conv: Conversation | None) -> Budget:
        own = conv.params.get("budget") if conv else None
        b = self.settings.budget
        if not isinstance(own, dict):
            return b
        return Budget(conversation_cost=own.get("cost", b.conversation_cost),
                      conversation_tokens=own.get("tokens", b.conversation_tokens),
                      daily_cost=b.daily_cost, daily_tokens=b.daily_tokens,
                      action="warn" if own.get("action", b.action) == "warn" else "block")

    def _base(self, conv: Conversation | None, history: list[p.MessageOut],
              comp: Compaction | None) -> tuple[str | None, list[p.MessageOut]]:
        system = conv.system if conv else None
        if comp is None:
            return system, history
        return system_with(system, comp.summary, comp.upto_seq), [m for m in history if m.seq > comp.upto_seq]

    def _raw_budget(self, spec: ModelSpec, options: dict[str, Any]) -> tuple[int, int]:
        reserve = reserve_for(spec.context_window, spec.max_output, options, self.settings)
        return int((spec.context_window - reserve) / self.counter.ratio(spec.name)), reserve

    def _fit(self, conv: Conversation | None, history: list[p.MessageOut], current: list[p.MessageOut],
             spec: ModelSpec, tools: Iterable[Any], options: dict[str, Any], strategy: str) -> tuple[Fit, int]:
        comp = self.db.latest_compaction(conv.id) if conv else None
        system, hist = self._base(conv, history, comp)
        budget, reserve = self._raw_budget(spec, options)
        family = family_of(spec.provider)
        total = self._history_total(conv, hist, family) if comp is None else None
        return fit(self.counter, family, system, hist, current, list(tools), budget, strategy, total), reserve

    def _history_total(self, conv: Conversation | None, hist: list[p.MessageOut], family: Any) -> int | None:
        """The tokens of a stored conversation's whole history, kept up to date incrementally: only
        messages appended since the last turn are counted (O(1) per turn as history grows)."""
        if conv is None or conv.id < 0:
            return None
        key = (conv.id, family.name)
        counted, last_seq, total = self._totals.get(key, (0, 0, 0))
        if counted > len(hist) or (counted and hist[counted - 1].seq != last_seq):
            counted, total = 0, 0  # the history was replaced (cleared, reloaded): count afresh
        for m in hist[counted:]:
            total += self.counter.message(m, family)
        self._totals[key] = (len(hist), hist[-1].seq if hist else 0, total)
        if len(self._totals) > 4096:
            self._totals.pop(next(iter(self._totals)))
        return total

    # ------------------------------------------------------------ before every send
    async def prepare(self, conv: Conversation, history: list[p.MessageOut], current: list[p.MessageOut],
                      spec: ModelSpec, tools: list[Any], options: dict[str, Any], turn_id: str,
                      origin: object | None, noted: set) -> tuple[str | None, Sequence[p.MessageOut], int]:
        """The system prompt and messages to send to `spec`, fitted; and their raw token estimate."""
        strategy = self.strategy(conv)
        f, reserve = self._fit(conv, history, current, spec, tools, options, strategy)
        summary: Compaction | None = None
        note = None
        before = f.before  # what the request would have been with nothing left out
        if f.dropped and strategy == "summarize":
            try:
                summary = await self._summarise(conv, history, current, spec, tools, options)
            except (ProviderError, OSError) as err:
                note = f"the summary failed ({err}); the oldest turns were left out instead"
            if summary is not None:
                f, reserve = self._fit(conv, history, current, spec, tools, options, "drop-oldest")
        if f.dropped or f.cleared or summary is not None or note:
            key = (spec.name, tuple(f.dropped), tuple(f.cleared), summary.id if summary else None)
            if key not in noted:
                noted.add(key)
                self._notify(conv, turn_id, origin, spec, strategy, f, before, reserve, summary, note)
        if not f.fits:
            raise ProviderError("context_length", (
                f"the request does not fit {spec.name}'s window even with all earlier turns left out: ~"
                f"{self.counter.corrected(spec.name, f.tokens)} tokens + {reserve} for the reply > "
                f"{spec.context_window}"))
        return f.system, f.messages, f.tokens

    def _notify(self, conv: Conversation, turn_id: str, origin: object | None, spec: ModelSpec, strategy: str,
                f: Fit, before: int, reserve: int, summary: Compaction | None, note: str | None) -> None:
        corrected = self.counter.corrected
        self.events.publish(conv.id, p.CHAT_CONTEXT_FITTED, p.ContextFitted(
            conversation=conv.name, turn_id=turn_id, model=spec.name, strategy=strategy,
            action="summarized" if summary else f.action, tokens_before=corrected(spec.name, before),
            tokens_after=corrected(spec.name, f.tokens), context_window=spec.context_window, reply_reserve=reserve,
            dropped=len(f.dropped), dropped_seqs=f.dropped, cleared_seqs=f.cleared,
            summary_upto_seq=summary.upto_seq if summary else None, summary_model=summary.model if summary else None,
            note=note), origin)

    def observe(self, spec: ModelSpec, raw: int, usage: p.Usage) -> None:
        """Correct later estimates for this model by what its provider reported (echo reports no real count)."""
        if spec.provider != "echo":
            self.counter.observe(spec.name, raw, usage.input_tokens)

    # ------------------------------------------------------------ summaries
    def summary_model(self, spec: ModelSpec, wanted: str | None = None) -> ModelSpec:
        """`wanted`, else [context] summary-model, else the cheapest model of the same provider."""
        for name in (wanted, self.settings.summary_model):
            if name:
                s = self.registry.get(name)
                if s.provider in self.providers:
                    return s
        same = [s for s in self.registry.all() if s.provider == spec.provider]
        return min(same, key=lambda s: (s.input_price + s.output_price, -s.context_window), default=spec)

    async def _summarise(self, conv: Conversation, history: list[p.MessageOut], current: list[p.MessageOut],
                         spec: ModelSpec, tools: list[Any], options: dict[str, Any],
                         wanted: str | None = None, keep: int | None = None) -> Compaction | None:
        """Summarise the oldest turns (those `drop-oldest` would leave out with room for the summary,
        or all but the last `keep` turns) with the previous summary; record the compaction."""
        comp = self.db.latest_compaction(conv.id)
        system, hist = self._base(conv, history, comp)
        room = min(self.settings.summary_tokens, max(self._raw_budget(spec, options)[0] // 4, 16))
        if keep is None:
            budget = self._raw_budget(spec, options)[0] - room - 40
            plan = fit(self.counter, family_of(spec.provider), system, hist, current, tools, budget, "drop-oldest")
            gone = [m for m in hist if m.seq in set(plan.dropped)]
        else:
            from chatd.context import groups
            turns = groups(hist)
            gone = [m for g in turns[:max(len(turns) - keep, 0)] for m in g]
        if not gone:
            return None
        before = self.counter.request(system, hist, tools, family_of(spec.provider))
        summariser = self.summary_model(spec, wanted)
        text = transcript(gone, comp.summary if comp else None)
        limit = max(summariser.context_window - room - 200, 64)
        if text_tokens(text) > limit:  # keep the newest part the summariser can read
            text = "…" + text[-limit * 3:]
        summary, usage = await self._complete(summariser, SUMMARY_PROMPT.format(tokens=room), text, room)
        summary = clip(summary.strip(), room)
        if not summary:
            raise ProviderError("stream", f"{summariser.name} returned an empty summary")
        kept = [m for m in hist if m.seq > gone[-1].seq]
        after = self.counter.request(system_with(conv.system, summary, gone[-1].seq), kept, tools,
                                     family_of(spec.provider))
        self.db.add_spend(conv.id, usage.input_tokens + usage.output_tokens, cost_of(summariser, usage))
        return self.db.add_compaction(conv.id, gone[-1].seq, summary, summariser.name,
                                      self.counter.corrected(spec.name, before), self.counter.corrected(spec.name, after))

    async def _complete(self, spec: ModelSpec, system: str, text: str, max_tokens: int) -> tuple[str, p.Usage]:
        user = p.MessageOut(seq=0, role="user", text=text, parts=[p.TextPart(text)])
        request = ProviderRequest(model=spec, system=system, messages=[user], options={"maxNewTokens": max_tokens})
        chunks: list[str] = []
        usage = p.Usage()
        async for event in self.providers[spec.provider].stream(request):
            if type(event) is TextDelta:
                chunks.append(event.text)
            elif type(event) is UsageEvent:
                usage = event.usage
        return "".join(chunks), usage

    async def compact(self, conv: Conversation, history: list[p.MessageOut], spec: ModelSpec,
                      model: str | None, keep_turns: int | None) -> Compaction | None:
        keep = self.settings.keep_turns if keep_turns is None else keep_turns
        return await self._summarise(conv, history, [], spec, [], {}, wanted=model, keep=keep)

    # ------------------------------------------------------------ budgets
    def check_budget(self, conv: Conversation, history: list[p.MessageOut], current: list[p.MessageOut],
                     spec: ModelSpec, tools: list[Any], options: dict[str, Any], turn_id: str,
                     origin: object | None) -> None:
        budget = self._budget(conv)
        if all(v is None for v in (budget.conversation_cost, budget.conversation_tokens, budget.daily_cost,
                                   budget.daily_tokens)):
            return
        f, _ = self._fit(conv, history, current, spec, tools, options, "drop-oldest")
        tokens = self.counter.corrected(spec.name, f.tokens)
        cost = tokens * spec.input_price / 1_000_000
        conv_tokens, conv_cost = self.db.spent(conv.id)
        day_tokens, day_cost = self.db.spent_today()
        checks = (("conversation", "cost", budget.conversation_cost, conv_cost, cost),
                  ("conversation", "tokens", budget.conversation_tokens, conv_tokens, tokens),
                  ("daily", "cost", budget.daily_cost, day_cost, cost),
                  ("daily", "tokens", budget.daily_tokens, day_tokens, tokens))
        for scope, unit, limit, spent, this in checks:
            if limit is None or spent + this <= limit:
                continue
            what = f"${spent:.4f} spent + ~${this:.4f} for this send" if unit == "cost" else \
                f"{spent} tokens used + ~{this} for this send"
            limit_text = f"${limit:.4f}" if unit == "cost" else f"{limit} tokens"
            message = (f"{'conversation ' + repr(conv.name) if scope == 'conversation' else 'daily'} budget: "
                       f"{what} would exceed {limit_text}")
            data = {"scope": scope, "unit": unit, "limit": limit, "spent": spent, "estimate": this}
            if budget.action == "block":
                raise LimitExceeded(message + "; nothing was sent (raise the budget in config.toml [context.budget]"
                                    " or the conversation's params.budget)", data=data)
            self.events.publish(conv.id, p.CHAT_BUDGET_WARNING, p.BudgetWarning(
                conversation=conv.name, turn_id=turn_id, scope=scope, unit=unit, limit=limit, spent=spent,
                estimate=this, message=message), origin)

    # ------------------------------------------------------------ estimates and accounting
    def estimate(self, conv: Conversation | None, history: list[p.MessageOut], text: str, spec: ModelSpec,
                 tools: list[Any], options: dict[str, Any]) -> p.EstimateResult:
        current = [p.MessageOut(seq=0, role="user", text=text, parts=[p.TextPart(text)])] if text else []
        strategy = self.strategy(conv)
        f, reserve = self._fit(conv, history, current, spec, tools, options, strategy)
        corrected = self.counter.corrected
        before, after = corrected(spec.name, f.before), corrected(spec.name, f.tokens)
        return p.EstimateResult(
            conversation=conv.name if conv else None, model=spec.name, tokens=before, tokens_sent=after,
            context_window=spec.context_window, reply_reserve=reserve, fits=before + reserve <= spec.context_window,
            strategy=strategy, action="summarize" if f.dropped and strategy == "summarize" else f.action,
            estimated_cost=after * spec.input_price / 1_000_000,
            max_cost=(after * spec.input_price + reserve * spec.output_price) / 1_000_000,
            correction=round(self.counter.ratio(spec.name), 4))

    def info(self, conv: Conversation, history: list[p.MessageOut], spec: ModelSpec) -> p.ContextInfo:
        totals = self.db.totals(conv.id)
        comp = self.db.latest_compaction(conv.id)
        system, hist = self._base(conv, history, comp)
        tokens = self.counter.corrected(spec.name, self.counter.request(system, hist, [], family_of(spec.provider)))
        _, spent_cost = self.db.spent(conv.id)
        return p.ContextInfo(
            model=spec.name, tokens=tokens, context_window=spec.context_window,
            fill=round(tokens / spec.context_window, 4) if spec.context_window else 0.0,
            input_tokens=totals.input_tokens, output_tokens=totals.output_tokens, cached_tokens=totals.cached_tokens,
            cost=totals.cost, lifetime_cost=spent_cost, turns=totals.turns, strategy=self.strategy(conv),
            compacted_upto_seq=comp.upto_seq if comp else None)


def check_keep(keep: int | None) -> None:
    if keep is not None and keep < 0:
        raise InvalidArgument("keepTurns must be 0 or more")

