"""Fitting a request into a model's context window: settings, budgets and the strategies. Pure.

A request is the system prompt (plus the summary of a compacted past, if any), the stored history
after that summary, the running turn (its user message and the tool rounds so far, never cut) and the
tools offered. It must fit the window less room for the reply. When it does not, the conversation's
strategy decides what is sent instead; the stored history is never touched:

- `drop-oldest`: leave out the oldest whole turns (a user message and everything up to the next one,
  so a tool call always travels with its result and the transcript still starts with a user message);
- `clear-tool-results`: first replace the outputs of old tool results with a short placeholder that
  names the stored message, oldest first; then drop the oldest turns if that was not enough;
- `summarize`: the turns that would be dropped are summarised by a (cheaper) model; the summary is
  recorded as a compaction (`chatd.store.search`) and sent in the system prompt from then on.

What was done is reported to the clients (`chat/contextFitted`), so nothing is cut silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any, Iterable, Iterator, Literal, overload

import msgspec

from chatd import protocol as p
from chatd.tokens import Family, TokenCounter, text_tokens

Strategy = Literal["drop-oldest", "clear-tool-results", "summarize"]
STRATEGIES: tuple[str, ...] = ("drop-oldest", "clear-tool-results", "summarize")
SUMMARY_HEADER = "Summary of the earlier part of this conversation (messages up to #{upto}, kept in full in the store):"
CLEARED = "[tool result cleared to fit the context window; the full result is stored as message #{seq}]"


class Budget(msgspec.Struct, rename="kebab", forbid_unknown_fields=True, omit_defaults=True):
    """Spending limits (USD and tokens). `conversation-*` count a conversation's whole life (a clear does
    not reset them); `daily-*` count every conversation of the daemon since 00:00 UTC."""

    conversation_cost: float | None = None
    conversation_tokens: int | None = None
    daily_cost: float | None = None
    daily_tokens: int | None = None
    action: Literal["warn", "block"] = "block"


class ContextSettings(msgspec.Struct, rename="kebab", forbid_unknown_fields=True, omit_defaults=True):
    """config.toml's `[context]` table (conversation params `contextStrategy` and `budget` override it)."""

    strategy: Strategy = "drop-oldest"
    summary_model: str | None = None  # default: the cheapest model of the chosen model's provider
    reply_reserve: int = 0  # tokens kept free for the reply; 0: maxNewTokens, else min(max output, window/4)
    summary_tokens: int = 1024  # the most a summary may take
    keep_turns: int = 2  # turns `conversation/compact` leaves verbatim
    budget: Budget = msgspec.field(default_factory=Budget)


def reserve_for(window: int, max_output: int, options: dict[str, Any], settings: ContextSettings) -> int:
    wanted = options.get("maxNewTokens")
    if isinstance(wanted, int) and wanted > 0:
        return min(wanted, window - 1)
    if settings.reply_reserve > 0:
        return min(settings.reply_reserve, window - 1)
    return max(min(max_output, window // 4), 1)


def groups(messages: list[p.MessageOut]) -> list[list[p.MessageOut]]:
    """Whole turns: each group starts at a user message (leading non-user messages form their own)."""
    out: list[list[p.MessageOut]] = []
    for m in messages:
        if m.role == "user" or not out:
            out.append([m])
        else:
            out[-1].append(m)
    return out


def system_with(system: str | None, summary: str | None, upto: int) -> str | None:
    if not summary:
        return system
    block = SUMMARY_HEADER.format(upto=upto) + "\n" + summary
    return f"{system}\n\n{block}" if system else block


class Joined(Sequence[p.MessageOut]):
    """The history and the running turn read as one list, copying neither: a request would otherwise copy
    the conversation's cached history (and free it when sent), ~50 µs a turn at 10,000 messages, all of
    an echo turn's growth with history. The history is read up to its length when joined: the cache
    only grows at its end, so the view stays the request it was."""

    __slots__ = ("_head", "_n", "_tail")

    def __init__(self, head: list[p.MessageOut], tail: list[p.MessageOut]) -> None:
        self._head, self._n, self._tail = head, len(head), tail

    def __len__(self) -> int:
        return self._n + len(self._tail)

    @overload
    def __getitem__(self, i: int) -> p.MessageOut: ...
    @overload
    def __getitem__(self, i: slice) -> list[p.MessageOut]: ...
    def __getitem__(self, i: int | slice) -> p.MessageOut | list[p.MessageOut]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        j = i + len(self) if i < 0 else i
        if not 0 <= j < len(self):
            raise IndexError("message index out of range")
        return self._head[j] if j < self._n else self._tail[j - self._n]

    def __iter__(self) -> Iterator[p.MessageOut]:
        yield from islice(self._head, self._n)
        yield from self._tail

    def __reversed__(self) -> Iterator[p.MessageOut]:
        yield from reversed(self._tail)
        for j in range(self._n - 1, -1, -1):
            yield self._head[j]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, Joined)) and len(other) == len(self) and all(
            a is b or a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"Joined({list(self)!r})"


class Fit(msgspec.Struct):
    """What will be sent, and what was left out to get there."""

    system: str | None
    messages: Sequence[p.MessageOut]  # history kept (possibly with cleared results) + the running turn
    tokens: int  # raw estimate of the request as sent
    before: int  # raw estimate of the request had nothing been left out
    budget: int  # raw tokens available (window less the reply's room, divided by the model's ratio)
    fits: bool
    dropped: list[int] = []  # seqs left out
    cleared: list[int] = []  # seqs whose tool results were replaced by a placeholder

    @property
    def action(self) -> str:
        if self.dropped and self.cleared:
            return "cleared+dropped"
        return "dropped" if self.dropped else "cleared" if self.cleared else "none"


def _cleared(m: p.MessageOut) -> p.MessageOut:
    parts = [p.ToolResultPart(call_id=x.call_id, name=x.name, output=CLEARED.format(seq=m.seq), is_error=x.is_error)
             if isinstance(x, p.ToolResultPart) else x for x in m.parts]
    return msgspec.structs.replace(m, parts=parts, turn_id=None)  # no turn id: not the cached original


def fit(counter: TokenCounter, family: Family, system: str | None, history: list[p.MessageOut],
        current: list[p.MessageOut], tools: Iterable[Any], budget: int, strategy: str,
        history_total: int | None = None) -> Fit:
    """Keep as much of `history` as fits `budget` raw tokens beside `current`, per the strategy
    (`summarize` fits like `drop-oldest`; the caller summarises what `dropped` names).

    `history_total`, when the caller keeps it, is the tokens of all of `history`: a request that fits
    whole is then answered without walking the history (a turn's cost stays flat as history grows)."""
    fixed = family.per_request + counter.system(system, family) + counter.tools(tools, family) + sum(
        counter.message(m, family) for m in current)
    if history_total is not None and fixed + history_total <= budget:
        total = fixed + history_total
        return Fit(system=system, messages=Joined(history, current), tokens=total, before=total, budget=budget,
                   fits=True, dropped=[], cleared=[])
    turns = groups(history)
    sizes = [sum(counter.message(m, family) for m in g) for g in turns]
    before = total = fixed + sum(sizes)
    cleared: list[int] = []
    if total > budget and strategy == "clear-tool-results":
        for gi, g in enumerate(turns):
            for mi, m in enumerate(g):
                if total <= budget:
                    break
                if m.role == "tool" and any(isinstance(x, p.ToolResultPart) for x in m.parts):
                    new = _cleared(m)
                    delta = counter.message(new, family) - counter.message(m, family)
                    if delta < 0:
                        g[mi] = new
                        sizes[gi] += delta
                        total += delta
                        cleared.append(m.seq)
    dropped: list[int] = []
    start = 0
    while total > budget and start < len(turns):
        total -= sizes[start]
        dropped.extend(m.seq for m in turns[start])
        start += 1
    kept = [m for g in turns[start:] for m in g]
    cleared = [s for s in cleared if s not in set(dropped)]
    return Fit(system=system, messages=[*kept, *current], tokens=total, before=before, budget=budget,
               fits=total <= budget, dropped=dropped, cleared=cleared)


def transcript(messages: Iterable[p.MessageOut], previous: str | None = None) -> str:
    """The text a summariser reads: the previous summary, then one line per message."""
    lines = [f"(earlier summary) {previous}"] if previous else []
    for m in messages:
        for part in m.parts:
            if isinstance(part, p.TextPart) and part.text:
                lines.append(f"{m.role}: {part.text}")
            elif isinstance(part, p.ToolCallPart):
                lines.append(f"assistant called {part.name}({msgspec.json.encode(part.arguments).decode()})")
            elif isinstance(part, p.ToolResultPart):
                out = part.output if isinstance(part.output, str) else msgspec.json.encode(part.output).decode()
                lines.append(f"tool {part.name} returned: {out}")
    return "\n".join(lines)


SUMMARY_PROMPT = (
    "Summarise the conversation below so it can be continued without it. Keep every fact, decision, name, "
    "number, file, code identifier and open question; drop pleasantries. Write plain prose or bullets, "
    "at most {tokens} tokens, no preamble."
)


def clip(text: str, tokens: int) -> str:
    """The longest prefix of `text` estimated at no more than `tokens` tokens (by halving)."""
    if text_tokens(text) <= tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_tokens(text[:mid]) <= tokens - 1:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"
