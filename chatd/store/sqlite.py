"""SQLite persistence for conversations, messages and turn provenance; the only writer of that data.

Invariants:
- A turn is atomic: its messages (the last carrying the turn's provenance), or nothing. A commit writes
  those rows and nothing else (schema v9): what is derived from messages (the conversation row's
  `last_seq`, `message_count`, `last_model` and `updated_at`, the spend ledger, the full-text index) is
  folded in later, in batches (`fold_pending`), up to the row's `folded_seq`. Every read adds the
  messages after `folded_seq` (the tail), so what a read returns is exact at any time. The tail is
  contiguous: commits append at the next seq, and forks and imports (whose copies can have gaps) and
  clears fold at once, a full fold raising `folded_seq` to `last_seq`. So a conversation's counters are
  read from the tail's last row alone, in O(1); only the tail's spending is a sum over it.
  `commit_turn` is one transaction. The daemon's `commit_turn_grouped` is one SAVEPOINT in a transaction
  shared with the turns finishing in the same event-loop iteration, committed on the next iteration, and
  returns only after that COMMIT (group commit: under load one BEGIN, COMMIT and WAL write for many turns;
  a lone turn would pay a loop hop and a savepoint for nothing, so the service uses `commit_turn` then).
- `seq` is per conversation, strictly increasing, never reused (clear keeps the counter).
- Appending reads and writes O(1) rows whatever the history length, and so does reading a
  conversation. The store folds the conversations it wrote (`pending`, found again on opening for what a
  process that died left) when asked, before a search, and when it closes.
- WAL with synchronous=NORMAL: a committed turn survives `kill -9` of the daemon (the WAL is in the OS
  page cache); only a power loss can take the last few commits. The file is created 0600.
- With `background_checkpoints` (the daemon), WAL checkpoints run on a worker thread with a connection of
  their own (PASSIVE: they never block a writer), so no commit copies the WAL back into the database
  inline: SQLite's own checkpoint after a COMMIT (every 1,000 pages by default; ~3 ms here, once every
  ~200 turns) is kept only as a safety net at 4x that, for writes that never let a pass catch up.
Methods are synchronous and fast (tens of microseconds); the daemon calls them on its event loop. A plain
write while a group is open commits the group first, so every synchronous write is durable when it returns.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from chatd import protocol as p
from chatd.errors import AlreadyExists, StorageError
from chatd.store import schema

_parts_decoder = msgspec.json.Decoder(list[p.Part])
_json = msgspec.json.encode
# the spend ledger: one row per conversation and UTC day, added to (params: conversation, Unix time, tokens, cost)
_ADD_SPEND = (" ON CONFLICT (conversation_id, day)"
              " DO UPDATE SET tokens = tokens + excluded.tokens, cost = cost + excluded.cost")
SPEND_UPSERT = "INSERT INTO spend VALUES (?, date(?, 'unixepoch'), ?, ?)" + _ADD_SPEND
# a turn's tokens and cost, from the provenance on its last message row `m` (schema v6)
TURN_TOKENS = ("coalesce(json_extract(m.turn, '$.usage.inputTokens'), 0)"
               " + coalesce(json_extract(m.turn, '$.usage.outputTokens'), 0)")
TURN_COST = "coalesce(json_extract(m.turn, '$.cost'), 0)"
# a ledger row's day, tokens and cost, summed over turn rows `m` grouped by `day`
_TURNS_SPENT = f"date(json_extract(m.turn, '$.finishedAt'), 'unixepoch') AS day, sum({TURN_TOKENS}), sum({TURN_COST})"
# conversation `c`'s messages `m` not yet folded (schema v9), and a column of the last of them (a seek)
TAIL = "m.id > (c.id << 32) + c.folded_seq AND m.id <= (c.id << 32) + 4294967295"


def _tail_last(column: str, where: str = "") -> str:
    return f"(SELECT {column} FROM messages m WHERE {TAIL}{where} ORDER BY m.id DESC LIMIT 1)"


_LIVE_LAST_SEQ = f"max(c.last_seq, coalesce({_tail_last('m.id & 4294967295')}, 0))"
# a fold moves a row's counters past the messages it folded (params: their last seq, count, last turn's model,
# last created_at, conversation id); `folded` is the new watermark
_FOLD_ROW = ("UPDATE conversations SET folded_seq = {folded}, last_seq = max(last_seq, ?1),"
             " message_count = message_count + ?2, last_model = coalesce(?3, last_model),"
             " updated_at = max(updated_at, coalesce(?4, 0)) WHERE id = ?5")
# Background checkpoints (see the module doc): a pass starts once this many rows have changed since the last
# (a turn changes 2 rows and writes ~1.3 WAL pages since schema v9, so ~500 pages; SQLite's default is 1,000);
# the inline safety net.
CHECKPOINT_CHANGES = 800
SAFETY_NET_PAGES = 4000
PASS_ROUNDS = 3


class Conversation(msgspec.Struct):
    id: int
    name: str
    system: str | None
    models: list[str]
    model_weights: list[float] | None
    prefer_model: str
    params: dict[str, Any]
    last_model: str | None
    last_seq: int
    message_count: int
    created_at: float
    updated_at: float


class NewMessage(msgspec.Struct):
    role: p.Role
    parts: list[p.Part]
    model: str | None = None


class TurnRecord(msgspec.Struct):
    id: str
    model: str | None
    provider: str | None
    attempts: list[p.Attempt]
    usage: p.Usage
    cost: float
    finish_reason: str | None
    started_at: float
    finished_at: float


def message_id(conv_id: int, seq: int) -> int:
    """A message's key (schema v7, and the full-text index's rowid): a conversation's messages are the ids
    from `message_id(conv_id, 1)` to `message_id(conv_id, LAST_SEQ)`, in seq order."""
    return (conv_id << 32) + seq


LAST_SEQ = 0xFFFFFFFF

# A conversation as it is now: its row plus its tail (schema v9), in `_conv`'s order. The tail is contiguous
# and ends with a turn's last row (the one with provenance), so each column is one seek to its end.
_TAIL_MODEL = _tail_last("json_extract(m.turn, '$.model')", " AND m.turn IS NOT NULL")
_CONV_SELECT = (
    "SELECT c.id, c.name, c.system, c.models, c.model_weights, c.prefer_model, c.params,"
    f" coalesce({_TAIL_MODEL}, c.last_model),"
    f" {_LIVE_LAST_SEQ},"
    f" c.message_count + coalesce({_tail_last('(m.id & 4294967295) - c.folded_seq')}, 0),"
    " c.created_at,"
    f" max(c.updated_at, coalesce({_tail_last('m.created_at')}, 0))"
    " FROM conversations c"
)


def text_of(parts: list[p.Part]) -> str:
    return "".join(part.text for part in parts if isinstance(part, p.TextPart))


def message_span(conv_id: int) -> tuple[int, int]:
    """The first and last possible message id of a conversation."""
    return message_id(conv_id, 1), message_id(conv_id, LAST_SEQ)


def _conv(row: tuple) -> Conversation:
    return Conversation(
        id=row[0],
        name=row[1],
        system=row[2],
        models=msgspec.json.decode(row[3]),
        model_weights=msgspec.json.decode(row[4]) if row[4] else None,
        prefer_model=row[5],
        params=msgspec.json.decode(row[6]),
        last_model=row[7],
        last_seq=row[8],
        message_count=row[9],
        created_at=row[10],
        updated_at=row[11],
    )


def _parts_column(parts: list[p.Part]) -> bytes | None:
    """`messages.parts`: NULL for one text part (schema v7: its text is the `text` column), else the JSON."""
    return None if len(parts) == 1 and type(parts[0]) is p.TextPart else _json(parts)


def _message(row: tuple) -> p.MessageOut:
    parts = [p.TextPart(row[2])] if row[3] is None else _parts_decoder.decode(row[3])
    return p.MessageOut(seq=row[0], role=row[1], text=row[2], parts=parts, model=row[4], turn_id=row[5],
                        created_at=row[6])


class Store:
    def __init__(self, path: str, *, background_checkpoints: bool = False) -> None:
        self.path = path
        if path != ":memory:":
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=1000")
        schema.migrate(self._db)
        # the conversations this store may have left unfolded: what it writes, and what it finds on opening
        # (a process that died before folding; ~1 µs a conversation)
        self._pending: set[int] = {row[0] for row in self._db.execute(
            f"SELECT c.id FROM conversations c WHERE EXISTS (SELECT 1 FROM messages m WHERE {TAIL})")}
        self._group: list[asyncio.Future] | None = None  # writers waiting on the open group's COMMIT
        self._checkpointer = _Checkpointer(self) if background_checkpoints and path != ":memory:" else None

    def close(self) -> None:
        self._commit_group()
        try:
            self.fold_pending()  # a short-lived process (`--standalone`) leaves nothing to fold behind
        except StorageError:
            pass  # the tail is read all the same; the next store to open this file folds it
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._db.close()

    @property
    def checkpoints(self) -> int:
        """Background checkpoint passes finished (0 without `background_checkpoints`)."""
        return self._checkpointer.passes if self._checkpointer is not None else 0

    # ------------------------------------------------------------ conversations
    @property
    def pending(self) -> set[int]:
        """The conversations whose messages may not all be folded yet (read-only to callers)."""
        return self._pending

    def get(self, name: str) -> Conversation | None:
        row = self._db.execute(f"{_CONV_SELECT} WHERE c.name = ?", (name,)).fetchone()
        return _conv(row) if row else None

    def get_by_id(self, conv_id: int) -> Conversation | None:
        row = self._db.execute(f"{_CONV_SELECT} WHERE c.id = ?", (conv_id,)).fetchone()
        return _conv(row) if row else None

    def create(
        self,
        name: str,
        *,
        system: str | None = None,
        models: list[str] | None = None,
        model_weights: list[float] | None = None,
        prefer_model: str = "last",
        params: dict[str, Any] | None = None,
    ) -> Conversation:
        """A new, empty conversation; `AlreadyExists` if the name is taken (the only unique column)."""
        now = time.time()
        models, params = list(models or ()), dict(params or {})
        try:
            with self._transaction():
                cur = self._db.execute(
                    "INSERT INTO conversations (name, system, models, model_weights, prefer_model, params,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, system, _json(models), _json(model_weights) if model_weights else None,
                     prefer_model, _json(params), now, now),
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(name) from None
        return Conversation(id=cur.lastrowid, name=name, system=system, models=models,  # type: ignore[arg-type]
                            model_weights=list(model_weights) if model_weights else None, prefer_model=prefer_model,
                            params=params, last_model=None, last_seq=0, message_count=0, created_at=now,
                            updated_at=now)

    def list(self, query: str | None = None, limit: int = 100) -> list[Conversation]:
        """The `limit` most recently updated conversations (whose names contain `query`), newest first.

        A row's `updated_at` is its live one unless the conversation has a tail, which is only newer: so
        the answer is among the `limit` newest rows (an index walk) and the pending conversations, and only
        those get their live columns. (A tail another process wrote is in that set once it has folded it,
        0.5 s after its write or on closing; until then that conversation may sort by its row's time.)"""
        match, pattern = "", None
        if query:
            match = " AND name LIKE :pattern ESCAPE '\\'"
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
        sql = (f"{_CONV_SELECT} WHERE c.id IN (SELECT id FROM (SELECT id FROM conversations WHERE 1{match}"
               "  ORDER BY updated_at DESC, id DESC LIMIT :limit)"
               f" UNION SELECT value FROM json_each(:pending)){match}"
               " ORDER BY 12 DESC, c.id DESC LIMIT :limit")  # 12: the live updated_at
        pending = msgspec.json.encode(sorted(self._pending))
        return [_conv(r) for r in self._db.execute(sql, {"limit": limit, "pending": pending, "pattern": pattern})]

    _UPDATABLE = {"name", "system", "models", "model_weights", "prefer_model", "params"}

    def update(self, conv_id: int, **fields: Any) -> Conversation:
        unknown = set(fields) - self._UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        cols, args = [], []
        for key, value in fields.items():
            cols.append(f"{key} = ?")
            args.append(_json(value) if key in ("models", "model_weights", "params") and value is not None else value)
        cols.append("updated_at = ?")
        args.append(time.time())
        with self._transaction():
            self._db.execute(f"UPDATE conversations SET {', '.join(cols)} WHERE id = ?", (*args, conv_id))
        return self.get_by_id(conv_id)  # type: ignore[return-value]

    def delete(self, conv_id: int) -> None:
        with self._transaction():
            self._fold(conv_id)  # its spending stays in the ledger (as conversation 0's)
            self._db.execute("DELETE FROM messages WHERE id BETWEEN ? AND ?", message_span(conv_id))
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
        self._pending.discard(conv_id)

    def clear(self, conv_id: int) -> Conversation:
        with self._transaction():
            self._fold(conv_id)  # the row then counts every message (and `last_seq` keeps the last)
            self._db.execute("DELETE FROM messages WHERE id BETWEEN ? AND ?", message_span(conv_id))
            self._db.execute(
                "UPDATE conversations SET message_count = 0, updated_at = ? WHERE id = ?", (time.time(), conv_id)
            )
        self._pending.discard(conv_id)
        return self.get_by_id(conv_id)  # type: ignore[return-value]

    def fork(self, source: Conversation, new_name: str, at_seq: int | None) -> Conversation:
        upto = source.last_seq if at_seq is None else at_seq
        with self._transaction():
            fork = self.create(
                new_name, system=source.system, models=source.models, model_weights=source.model_weights,
                prefer_model=source.prefer_model, params=source.params,
            )
            self._db.execute(
                "INSERT INTO messages (id, role, text, parts, model, turn_id, created_at)"
                " SELECT ? + seq, role, text, parts, model, turn_id, created_at FROM messages"
                " WHERE id BETWEEN ? AND ?",
                (message_id(fork.id, 0), message_id(source.id, 1), message_id(source.id, max(min(upto, LAST_SEQ), 0))),
            )  # copies have no provenance: `last_model` is the row's
            self._db.execute("UPDATE conversations SET last_model = ? WHERE id = ?", (source.last_model, fork.id))
            self._fold(fork.id)  # the copies can have gaps (a clear), which a tail must not
        return self.get_by_id(fork.id)  # type: ignore[return-value]

    # ------------------------------------------------------------ messages and turns
    def messages(self, conv_id: int, after_seq: int = 0) -> list[p.MessageOut]:
        rows = self._db.execute(
            "SELECT seq, role, text, parts, model, turn_id, created_at FROM messages"
            " WHERE id > ? AND id <= ? ORDER BY id",
            (message_id(conv_id, min(max(after_seq, 0), LAST_SEQ)), message_id(conv_id, LAST_SEQ)),
        )
        return [_message(r) for r in rows]

    def commit_turn(self, conv_id: int, turn: TurnRecord, messages: list[NewMessage]) -> list[p.MessageOut]:
        """Append one finished turn atomically; returns the stored messages with their seqs."""
        with self._transaction():
            return self._write_turn(conv_id, turn, messages)

    def _write_turn(self, conv_id: int, turn: TurnRecord, messages: list[NewMessage]) -> list[p.MessageOut]:
        now = time.time()
        out: list[p.MessageOut] = []
        # The seqs follow the last one (a read: this transaction holds the write lock); the row is not written.
        row = self._db.execute(f"SELECT {_LIVE_LAST_SEQ} FROM conversations c WHERE c.id = ?", (conv_id,)).fetchone()
        if row is None:
            raise LookupError("conversation was deleted during the turn")
        seq = row[0]
        provenance = _json({"model": turn.model, "provider": turn.provider, "attempts": turn.attempts,
                            "usage": turn.usage, "cost": turn.cost, "finishReason": turn.finish_reason,
                            "startedAt": turn.started_at, "finishedAt": turn.finished_at,
                            "latencyMs": (turn.finished_at - turn.started_at) * 1000.0})
        rows = []
        last = len(messages) - 1
        for k, m in enumerate(messages):
            seq += 1
            text = text_of(m.parts)
            rows.append((message_id(conv_id, seq), m.role, text, _parts_column(m.parts), m.model, turn.id, now,
                         provenance if k == last else None))  # the turn's provenance rides on its last row
            out.append(p.MessageOut(seq=seq, role=m.role, text=text, parts=m.parts, model=m.model,
                                    turn_id=turn.id, created_at=now))
        self._db.executemany(
            "INSERT INTO messages (id, role, text, parts, model, turn_id, created_at, turn)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._pending.add(conv_id)
        return out

    def import_conversation(self, name: str, doc: p.ExportDocument) -> Conversation:
        """Insert an exported conversation whole, in one transaction: its settings, counters and times, and
        its messages with their own seqs, turn ids and times (`conversation/import`). Turn provenance is not
        part of the format, so nothing is added to the spend ledger. The messages are folded at once (they
        can have gaps); `last_seq` is the document's, which a clear can have left above the last message's."""
        c = doc.conversation
        with self._transaction():
            conv_id = self._db.execute(
                "INSERT INTO conversations (name, system, models, model_weights, prefer_model, params, last_model,"
                " last_seq, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, c.system, _json(c.models), _json(c.model_weights) if c.model_weights else None,
                 c.prefer_model, _json(c.params), c.last_model, c.last_seq, c.created_at, c.updated_at),
            ).lastrowid
            self._db.executemany(
                "INSERT INTO messages (id, role, text, parts, model, turn_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(message_id(conv_id, m.seq), m.role, text_of(m.parts), _parts_column(m.parts), m.model, m.turn_id,
                  m.created_at) for m in doc.messages],
            )
            self._fold(conv_id)  # type: ignore[arg-type]
        return self.get_by_id(conv_id)  # type: ignore[return-value, arg-type]

    def turn(self, conv_id: int, turn_id: str) -> dict[str, Any] | None:
        """A turn's provenance: model, provider, attempts, usage, cost, finish reason, timing (schema v6:
        stored on the turn's last message; a scan of the conversation's rows, for an occasional lookup)."""
        row = self._db.execute(
            "SELECT turn FROM messages WHERE id BETWEEN ? AND ? AND turn_id = ? AND turn IS NOT NULL",
            (*message_span(conv_id), turn_id),
        ).fetchone()
        return {"id": turn_id, **msgspec.json.decode(row[0])} if row else None

    # ------------------------------------------------------------ folding (schema v9)
    def fold_pending(self, budget: int | None = None) -> int:
        """Fold the messages committed since the last fold into what is derived from them: the full-text
        index, the conversation row's counters and the spend ledger; at most `budget` messages when given
        (whole tails first, then part of the next). Returns how many were folded. One transaction with the
        watermarks, so nothing is ever counted or indexed twice or missed."""
        ids = sorted(self._pending)
        chunk = budget or len(ids) or 1  # a tail is a message or more: `budget` conversations fill a step
        with self._transaction():
            whole, n, cut = [], 0, None
            for start in range(0, len(ids), chunk):  # tails read a chunk at a time: a step is O(budget)
                for tail in self._tails(ids[start:start + chunk]):
                    if budget is not None and n + tail[2] > budget:
                        cut = tail
                        break
                    whole.append(tail)
                    n += tail[2]
                if cut is not None:
                    break
            self._fold_whole(whole)
            if cut is not None and n < budget:  # type: ignore[operator]
                n += self._fold_part(cut, budget - n)  # type: ignore[operator]
        if cut is None:
            self._pending.clear()  # every one folded (a deleted conversation has no tail: gone too)
        else:
            self._pending.difference_update(t[0] for t in whole)
        return n

    def _fold(self, conv_id: int) -> None:
        """Fold one conversation's whole tail (clear, delete, fork and import, in their transactions)."""
        self._fold_whole(self._tails([conv_id]))

    def _tails(self, ids: list[int]) -> list[tuple]:
        """Per conversation (in id order): id, folded_seq, tail length, last id, and the last message's
        created_at and turn model (the bare columns are the max() row's: a tail ends with a turn's last row)."""
        return self._db.execute(
            "SELECT c.id, c.folded_seq, count(m.id), max(m.id), m.created_at, json_extract(m.turn, '$.model')"
            f" FROM conversations c LEFT JOIN messages m ON {TAIL}"
            " WHERE c.id IN (SELECT value FROM json_each(?)) GROUP BY c.id ORDER BY c.id", (_json(ids),)).fetchall()

    def _fold_whole(self, tails: list[tuple]) -> None:
        """Fold these tails whole: one statement for the index, one for the ledger (a statement into FTS5
        costs ~30 µs whatever it adds), then the rows, raising `folded_seq` to `last_seq` (an import's
        `last_seq` can be above its last message)."""
        if not tails:
            return
        db, ids = self._db, _json([t[0] for t in tails if t[2]])
        db.execute(f"INSERT INTO message_fts (rowid, text) SELECT m.id, m.text FROM conversations c JOIN messages m"
                   f" ON {TAIL} WHERE c.id IN (SELECT value FROM json_each(?))", (ids,))
        db.execute(f"INSERT INTO spend SELECT c.id, {_TURNS_SPENT} FROM conversations c JOIN messages m ON {TAIL}"
                   " WHERE c.id IN (SELECT value FROM json_each(?)) AND m.turn IS NOT NULL GROUP BY c.id, day"
                   + _ADD_SPEND, (ids,))
        db.executemany(_FOLD_ROW.format(folded="max(last_seq, ?1)"),
                       [(top - message_id(conv_id, 0) if count else 0, count, model, last_at, conv_id)
                        for conv_id, _, count, top, last_at, model in tails])

    def _fold_part(self, tail: tuple, budget: int) -> int:
        """Fold the first `budget` messages of a longer tail. A cut mid-turn leaves `last_model` to the
        next fold (a read takes it from the tail meanwhile)."""
        db, conv_id, folded = self._db, tail[0], tail[1]
        lo = message_id(conv_id, folded)
        count, top, last_at, model = db.execute(
            "SELECT count(*), max(id), created_at, json_extract(turn, '$.model') FROM"
            " (SELECT id, created_at, turn FROM messages WHERE id > ? AND id <= ? ORDER BY id LIMIT ?)",
            (lo, message_id(conv_id, LAST_SEQ), budget)).fetchone()
        db.execute("INSERT INTO message_fts (rowid, text) SELECT id, text FROM messages WHERE id > ? AND id <= ?",
                   (lo, top))
        db.execute(f"INSERT INTO spend SELECT ?, {_TURNS_SPENT} FROM messages m"
                   " WHERE m.id > ? AND m.id <= ? AND m.turn IS NOT NULL GROUP BY day" + _ADD_SPEND,
                   (conv_id, lo, top))
        top_seq = top - message_id(conv_id, 0)
        db.execute(_FOLD_ROW.format(folded="?1"), (top_seq, count, model, last_at, conv_id))
        return count

    # ------------------------------------------------------------ group commit
    async def commit_turn_grouped(self, conv_id: int, turn: TurnRecord,
                                  messages: list[NewMessage]) -> list[p.MessageOut]:
        """`commit_turn` in the open group transaction; returns once the group's COMMIT is done
        (StorageError if it fails: then none of the group is stored).

        The first grouped write of a loop iteration opens the group (BEGIN IMMEDIATE) and schedules its
        COMMIT for the next iteration, so every turn finishing in between shares that one COMMIT and its
        WAL write. Each write runs in a SAVEPOINT: one that raises leaves nothing and the others are kept.
        The caller is told only after the COMMIT, so nothing is published before it is stored (a read on
        this connection in between does see the group's rows). A cancel that arrives while the COMMIT is
        pending is too late: the write is stored and returned."""
        loop, db = asyncio.get_running_loop(), self._db
        if self._group is None:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise storage_error(exc, self.path) from None
            self._group = []
            loop.call_soon(self._commit_group)
        try:
            db.execute("SAVEPOINT grouped")
            stored = self._write_turn(conv_id, turn, messages)
            db.execute("RELEASE grouped")
        except BaseException as exc:
            self._undo_write(exc)
            if isinstance(exc, sqlite3.OperationalError):
                raise storage_error(exc, self.path) from None
            raise
        done = loop.create_future()
        self._group.append(done)
        late_cancel = False
        while not done.done():
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                late_cancel = True
        if late_cancel:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        done.result()
        return stored

    def _undo_write(self, exc: BaseException) -> None:
        """Take back a grouped write that raised. SQLite ends the whole transaction itself on some errors
        (a full disk, an I/O error): then the group's earlier writes are gone too, and their writers are
        told so rather than that a later COMMIT stored them."""
        db = self._db
        if db.in_transaction:
            try:
                db.execute("ROLLBACK TO grouped")
                db.execute("RELEASE grouped")
                return
            except sqlite3.Error:
                pass
        self._end_group(exc if isinstance(exc, sqlite3.Error) else sqlite3.OperationalError(str(exc)))

    def _commit_group(self) -> None:
        """COMMIT the open group, if any, and tell its writers (a failed COMMIT rolls all of it back)."""
        if self._group is None:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._end_group(exc)
            return
        self._committed()
        group, self._group = self._group, None
        for done in group:
            if not done.done() and not done.get_loop().is_closed():
                done.set_result(None)

    def _end_group(self, cause: sqlite3.Error) -> None:
        """Roll the open group back and fail every writer waiting on it."""
        group, self._group = self._group or [], None
        _Tx.rollback(self._db)
        for done in group:
            if not done.done() and not done.get_loop().is_closed():
                done.set_exception(storage_error(cause, self.path))

    def _transaction(self) -> "_Tx":
        if self._group is not None:
            self._commit_group()  # a plain write is durable when it returns: the group goes first
        return _Tx(self._db, self.path, self._committed)

    def _committed(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.after_commit()


class _Checkpointer:
    """WAL checkpoints off the caller's thread: PASSIVE passes on one worker thread, on a connection of their
    own (a pass copies committed pages into the database file and fsyncs it while the event loop keeps
    committing; SQLite's locks keep the two apart, and sqlite3 lets go of the GIL while a pass runs). A pass
    starts after a COMMIT once CHECKPOINT_CHANGES rows have changed since the last one, one at a time. A
    pass that writers overtook (frames committed while it ran) leaves the WAL unable to restart, so it goes
    round again (a short pass: only those frames are left), PASS_ROUNDS times at most: chasing writers
    further costs them more (their WAL writes wait behind the pass's fsyncs) than the safety net does. Once
    a pass has caught up, the next write restarts the WAL from its beginning: with a millisecond between
    commits (any real turn waits that long on its provider) it stays ~1,000 pages long and no COMMIT
    checkpoints inline; back-to-back commits meet the safety net, with most of the WAL already copied."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # opened here, so a daemon's open files are the same before and after its first pass (leak checks)
        self._db = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatd-checkpoint")
        self._running = False  # set here, cleared by the worker when its pass ends
        self._caught_up = False
        self._mark = 0  # the store connection's total_changes when the last pass started
        self.passes = 0
        store._db.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")

    def after_commit(self) -> None:
        if self._running:
            return
        changes = self._store._db.total_changes
        if changes - self._mark < CHECKPOINT_CHANGES:
            return
        self._running, self._mark = True, changes
        self._pool.submit(self._pass)

    def _pass(self) -> None:
        """Checkpoint until a pass finds nothing new: a pass copies the frames of the snapshot it starts from
        and reports on those only, so it has caught up when the next one sees no more (that one is nearly
        free). PASS_ROUNDS at most; what writers add faster than that waits for the next pass, CHECKPOINT_CHANGES
        later, or for the safety net. `_caught_up` records how the last pass ended (tests read it)."""
        caught_up, seen = False, -1
        try:
            for _ in range(PASS_ROUNDS):
                busy, log, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
                if busy or copied < log:  # held back by a reader: SQLite's safety net, or a later pass
                    break
                if log == seen:
                    caught_up = True
                    break
                seen = log
        except sqlite3.Error:
            pass  # the next pass tries again; SQLite's safety net covers the WAL meanwhile
        finally:
            self._caught_up, self.passes, self._running = caught_up, self.passes + 1, False

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # a pass in progress finishes (killing it would be safe, too)
        self._db.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including cancellation and a COMMIT
    that fails: SQLite keeps such a transaction open). Storage failures leave as StorageError."""

    __slots__ = ("_db", "_path", "_outer", "_committed")

    def __init__(self, db: sqlite3.Connection, path: str, committed: Any) -> None:
        self._db = db
        self._path = path
        self._outer = False
        self._committed = committed  # called after a COMMIT of ours

    def __enter__(self) -> None:
        self._outer = not self._db.in_transaction  # nested: part of the enclosing transaction
        if not self._outer:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise storage_error(exc, self._path) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._outer:
            return
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as commit_error:
                self.rollback(self._db)
                raise storage_error(commit_error, self._path) from None
            self._committed()
            return
        self.rollback(self._db)
        if exc_type is not None and issubclass(exc_type, sqlite3.OperationalError):
            raise storage_error(exc, self._path) from None

    @staticmethod
    def rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def storage_error(exc: BaseException, path: str) -> StorageError:
    """One clear line for a failed write: the reason SQLite gives, and where the store is."""
    return StorageError(f"the store could not be written ({exc}); history before this is intact: {path}")
