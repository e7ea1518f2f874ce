"""Full-text search, compactions and spending, over the tables of schema migrations 3 and 5.

New messages reach the FTS index and the spend ledger off the commit path (`Store.fold_pending`, schema
v9), so a search first folds whatever is pending, and the sums of spending add the turns not yet folded
(the store's tails): both always see every committed message. The index loses deleted messages by
trigger. This module otherwise only reads, and writes compaction records (a summary sent instead of
older turns; the turns themselves are never touched) and spending that is not a turn.
"""

from __future__ import annotations

import re
import time

import msgspec

from chatd.store.sqlite import SPEND_UPSERT, TAIL, TURN_COST, TURN_TOKENS, Store, message_span


class Compaction(msgspec.Struct):
    id: int
    upto_seq: int
    summary: str
    model: str | None
    tokens_before: int
    tokens_after: int
    created_at: float


class Hit(msgspec.Struct):
    conversation: str
    seq: int
    role: str
    snippet: str
    created_at: float
    rank: float


class Totals(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0
    turns: int = 0


_TERM = re.compile(r'"([^"]*)"|(\S+)')


def fts_query(text: str) -> str:
    """A user's search text as an FTS5 query that cannot be a syntax error: every word (or "quoted
    phrase") is a quoted string, all must match; a trailing `*` keeps its prefix meaning; OR is kept."""
    terms = []
    for phrase, word in _TERM.findall(text):
        if word.upper() == "OR" and terms and terms[-1] != "OR":
            terms.append("OR")
            continue
        raw = phrase if phrase else word
        prefix = not phrase and raw.endswith("*") and len(raw) > 1
        raw = raw.rstrip("*") if prefix else raw
        if not raw.strip():
            continue
        terms.append('"' + raw.replace('"', '""') + '"' + ("*" if prefix else ""))
    while terms and terms[-1] == "OR":
        terms.pop()
    return " ".join(terms)


class ContextStore:
    """Reads and writes beside `Store`, on its connection."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._db = store._db

    # ------------------------------------------------------------ search
    def search(self, text: str, limit: int = 20, conversation_id: int | None = None,
               mark: tuple[str, str] = ("**", "**")) -> list[Hit]:
        query = fts_query(text)
        if not query:
            return []
        self._store.fold_pending()
        where = "message_fts MATCH ?"
        args: list = [mark[0], mark[1], query]
        if conversation_id is not None:
            where += " AND message_fts.rowid BETWEEN ? AND ?"
            args += message_span(conversation_id)
        rows = self._db.execute(
            "SELECT c.name, m.seq, m.role, snippet(message_fts, 0, ?, ?, '…', 16), m.created_at, message_fts.rank"
            " FROM message_fts"
            " JOIN messages m ON m.id = message_fts.rowid"
            " JOIN conversations c ON c.id = m.conversation_id"
            " WHERE " + where + " ORDER BY message_fts.rank LIMIT ?",
            (*args, limit),
        )
        return [Hit(conversation=r[0], seq=r[1], role=r[2], snippet=r[3], created_at=r[4], rank=r[5]) for r in rows]

    # ------------------------------------------------------------ compactions
    def add_compaction(self, conv_id: int, upto_seq: int, summary: str, model: str | None,
                       tokens_before: int, tokens_after: int) -> Compaction:
        now = time.time()
        row = self._db.execute(
            "INSERT INTO compactions (conversation_id, id, upto_seq, summary, model, tokens_before, tokens_after,"
            " created_at) SELECT ?, coalesce(max(id), 0) + 1, ?, ?, ?, ?, ?, ? FROM compactions"
            " WHERE conversation_id = ? RETURNING id",
            (conv_id, upto_seq, summary, model, tokens_before, tokens_after, now, conv_id),
        ).fetchone()
        return Compaction(id=row[0], upto_seq=upto_seq, summary=summary, model=model, tokens_before=tokens_before,
                          tokens_after=tokens_after, created_at=now)

    def latest_compaction(self, conv_id: int) -> Compaction | None:
        row = self._db.execute(
            "SELECT id, upto_seq, summary, model, tokens_before, tokens_after, created_at FROM compactions"
            " WHERE conversation_id = ? ORDER BY id DESC LIMIT 1", (conv_id,)).fetchone()
        return Compaction(*row) if row else None

    # ------------------------------------------------------------ spending
    def totals(self, conv_id: int) -> Totals:
        """Usage and cost of the turns still stored (since the last clear)."""
        row = self._db.execute(
            "SELECT coalesce(sum(json_extract(turn, '$.usage.inputTokens')), 0),"
            " coalesce(sum(json_extract(turn, '$.usage.outputTokens')), 0),"
            " coalesce(sum(json_extract(turn, '$.usage.cachedTokens')), 0),"
            " coalesce(sum(json_extract(turn, '$.cost')), 0), count(*)"
            " FROM messages WHERE id BETWEEN ? AND ? AND turn IS NOT NULL", message_span(conv_id)).fetchone()
        return Totals(*row)

    def add_spend(self, conv_id: int, tokens: int, cost: float) -> None:
        """Spending that is not a turn (a summary): counted in the budgets all the same."""
        if tokens or cost:
            self._db.execute(SPEND_UPSERT, (conv_id, time.time(), tokens, cost))

    def spent(self, conv_id: int) -> tuple[int, float]:
        """(tokens, cost) of a conversation's whole life, clears included: its ledger and its tail."""
        row = self._db.execute(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost), 0) FROM ("
            " SELECT tokens, cost FROM spend WHERE conversation_id = ?1"
            f" UNION ALL SELECT {TURN_TOKENS}, {TURN_COST} FROM conversations c JOIN messages m ON {TAIL}"
            "  WHERE c.id = ?1 AND m.turn IS NOT NULL)", (conv_id,)).fetchone()
        return row[0], row[1]

    def spent_today(self) -> tuple[int, float]:
        """(tokens, cost) of every turn since 00:00 UTC: the ledger's day and the tails of the conversations
        this store wrote (a process that wrote on the same file counts once it has folded, on closing)."""
        row = self._db.execute(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost), 0) FROM ("
            " SELECT tokens, cost FROM spend WHERE day = date('now')"
            f" UNION ALL SELECT {TURN_TOKENS}, {TURN_COST} FROM conversations c JOIN messages m ON {TAIL}"
            "  WHERE c.id IN (SELECT value FROM json_each(?)) AND m.turn IS NOT NULL"
            "  AND date(json_extract(m.turn, '$.finishedAt'), 'unixepoch') = date('now'))",
            (msgspec.json.encode(sorted(self._store.pending)),)).fetchone()
        return row[0], row[1]
