"""The store's schema and its forward migrations, keyed by `PRAGMA user_version`.

Each migration runs once, in order, inside one transaction with the version bump. Never edit a
shipped migration: append a new one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: conversations, turns with provenance, messages keyed by (conversation, seq)
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        system TEXT,
        models TEXT NOT NULL DEFAULT '[]',
        model_weights TEXT,
        prefer_model TEXT NOT NULL DEFAULT 'last',
        params TEXT NOT NULL DEFAULT '{}',
        last_model TEXT,
        last_seq INTEGER NOT NULL DEFAULT 0,
        message_count INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE turns (
        id TEXT PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        model TEXT,
        provider TEXT,
        attempts TEXT NOT NULL DEFAULT '[]',
        usage TEXT NOT NULL DEFAULT '{}',
        cost REAL NOT NULL DEFAULT 0,
        finish_reason TEXT,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        latency_ms REAL NOT NULL
    );
    CREATE INDEX turns_by_conversation ON turns(conversation_id);
    CREATE TABLE messages (
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        parts TEXT NOT NULL,
        model TEXT,
        turn_id TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
    """,
    # 2: turns keyed by (conversation, id) WITHOUT ROWID: a commit writes two fewer pages (no rowid
    # table, no secondary index); deleting a conversation still finds its turns by the key prefix.
    """
    CREATE TABLE turns_v2 (
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        model TEXT,
        provider TEXT,
        attempts TEXT NOT NULL DEFAULT '[]',
        usage TEXT NOT NULL DEFAULT '{}',
        cost REAL NOT NULL DEFAULT 0,
        finish_reason TEXT,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        latency_ms REAL NOT NULL,
        PRIMARY KEY (conversation_id, id)
    ) WITHOUT ROWID;
    INSERT INTO turns_v2 SELECT conversation_id, id, model, provider, attempts, usage, cost, finish_reason,
        started_at, finished_at, latency_ms FROM turns;
    DROP TABLE turns;
    ALTER TABLE turns_v2 RENAME TO turns;
    """,
    # 3: full-text search over message text (FTS5; rowid = conversation id << 32 | seq), kept in step
    # with every write to messages by triggers (commits, clears, deletes, forks) and built here for the
    # messages already stored; compactions (summaries sent instead of older turns, which stay stored);
    # a spend ledger written by a trigger on each committed turn, kept when a conversation is cleared,
    # and moved to conversation 0 when it is deleted (so daily totals survive, and a reused id starts at 0).
    """
    CREATE VIRTUAL TABLE message_fts USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');
    INSERT INTO message_fts (rowid, text)
        SELECT (conversation_id << 32) + seq, text FROM messages WHERE text != '';
    CREATE TRIGGER message_fts_insert AFTER INSERT ON messages WHEN NEW.text != '' BEGIN
        INSERT INTO message_fts (rowid, text) VALUES ((NEW.conversation_id << 32) + NEW.seq, NEW.text);
    END;
    CREATE TRIGGER message_fts_delete AFTER DELETE ON messages BEGIN
        DELETE FROM message_fts WHERE rowid = (OLD.conversation_id << 32) + OLD.seq;
    END;
    CREATE TABLE compactions (
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        upto_seq INTEGER NOT NULL,
        summary TEXT NOT NULL,
        model TEXT,
        tokens_before INTEGER NOT NULL DEFAULT 0,
        tokens_after INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (conversation_id, id)
    ) WITHOUT ROWID;
    CREATE TRIGGER compactions_clear AFTER UPDATE OF message_count ON conversations
        WHEN NEW.message_count = 0 AND OLD.message_count != 0 BEGIN
        DELETE FROM compactions WHERE conversation_id = NEW.id;
    END;
    CREATE TABLE spend (
        conversation_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        cost REAL NOT NULL
    );
    CREATE INDEX spend_by_conversation ON spend(conversation_id);
    CREATE INDEX spend_by_day ON spend(day);
    INSERT INTO spend SELECT conversation_id, date(finished_at, 'unixepoch'),
        coalesce(json_extract(usage, '$.inputTokens'), 0) + coalesce(json_extract(usage, '$.outputTokens'), 0), cost
        FROM turns;
    CREATE TRIGGER spend_turn AFTER INSERT ON turns BEGIN
        INSERT INTO spend VALUES (NEW.conversation_id, date(NEW.finished_at, 'unixepoch'),
            coalesce(json_extract(NEW.usage, '$.inputTokens'), 0) + coalesce(json_extract(NEW.usage, '$.outputTokens'), 0),
            NEW.cost);
    END;
    CREATE TRIGGER spend_forget AFTER DELETE ON conversations BEGIN
        UPDATE spend SET conversation_id = 0 WHERE conversation_id = OLD.id;
    END;
    """,
    # 4: new messages are indexed off the commit path (the FTS insert trigger was half of a commit's time,
    # bench T7): `indexed_seq` is how far a conversation's messages are in the index, `Store.index_pending`
    # indexes the rest, before every search and when the daemon is idle. Deletes still go by trigger
    # (deleting a row the index never had is a no-op). What migration 3 indexed is up to date.
    """
    DROP TRIGGER message_fts_insert;
    ALTER TABLE conversations ADD COLUMN indexed_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE conversations SET indexed_seq = last_seq;
    """,
    # 5: the spend ledger keeps one row per conversation and day, added to by an upsert: a commit writes
    # one ledger page instead of three (a rowid table and two indexes took a new entry each; the upsert
    # changes no indexed column, so `spend_by_day` is written on a conversation's first turn of a day
    # only). Sums are unchanged: the rows already there are summed into theirs.
    """
    CREATE TABLE spend_v5 (
        conversation_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        cost REAL NOT NULL,
        PRIMARY KEY (conversation_id, day)
    ) WITHOUT ROWID;
    INSERT INTO spend_v5 SELECT conversation_id, day, sum(tokens), sum(cost) FROM spend GROUP BY conversation_id, day;
    DROP TRIGGER spend_turn;
    DROP TRIGGER spend_forget;
    DROP TABLE spend;
    ALTER TABLE spend_v5 RENAME TO spend;
    CREATE INDEX spend_by_day ON spend(day);
    CREATE TRIGGER spend_turn AFTER INSERT ON turns BEGIN
        INSERT INTO spend VALUES (NEW.conversation_id, date(NEW.finished_at, 'unixepoch'),
            coalesce(json_extract(NEW.usage, '$.inputTokens'), 0) + coalesce(json_extract(NEW.usage, '$.outputTokens'), 0),
            NEW.cost)
        ON CONFLICT (conversation_id, day) DO UPDATE SET tokens = tokens + excluded.tokens, cost = cost + excluded.cost;
    END;
    CREATE TRIGGER spend_forget AFTER DELETE ON conversations BEGIN
        INSERT INTO spend SELECT 0, day, tokens, cost FROM spend WHERE conversation_id = OLD.id
        ON CONFLICT (conversation_id, day) DO UPDATE SET tokens = tokens + excluded.tokens, cost = cost + excluded.cost;
        DELETE FROM spend WHERE conversation_id = OLD.id;
    END;
    """,
    # 6: a turn's provenance moves onto its last message row (`messages.turn`, JSON: model, provider, attempts,
    # usage, cost, finishReason, startedAt, finishedAt, latencyMs; NULL on every other row) and the `turns`
    # table goes: a commit no longer writes a `turns` page and its share of B-tree splits (bench T7). The
    # spend ledger is added to by the commit itself (the trigger on `turns` goes with it). Copies made by
    # fork and import never had provenance and still have none.
    """
    ALTER TABLE messages ADD COLUMN turn TEXT;
    UPDATE messages SET turn = json_object('model', t.model, 'provider', t.provider, 'attempts', json(t.attempts),
            'usage', json(t.usage), 'cost', t.cost, 'finishReason', t.finish_reason, 'startedAt', t.started_at,
            'finishedAt', t.finished_at, 'latencyMs', t.latency_ms)
        FROM (SELECT m.conversation_id AS conversation_id, max(m.seq) AS seq, m.turn_id AS turn_id
              FROM messages m JOIN turns ON turns.conversation_id = m.conversation_id AND turns.id = m.turn_id
              GROUP BY m.conversation_id, m.turn_id) AS last
        JOIN turns t ON t.conversation_id = last.conversation_id AND t.id = last.turn_id
        WHERE messages.conversation_id = last.conversation_id AND messages.seq = last.seq;
    DROP TRIGGER spend_turn;
    DROP TABLE turns;
    """,
    # 7: messages become a rowid table keyed by `id = (conversation_id << 32) + seq` (the full-text index's
    # rowid already), with `conversation_id` and `seq` virtual columns computed from it, so a conversation's
    # messages are still stored in seq order and found by a range of `id`s. A WITHOUT ROWID table is an index
    # B-tree, where an append that fills the last leaf rebalances it with its two siblings: 4 pages written
    # where a rowid table's append at the end starts one new page (bench T7: 4.9 -> 3.5 WAL frames a commit).
    # No foreign key: the cascade would scan every message of every conversation (no index can serve it);
    # `Store.delete` deletes the conversation's range itself. Conversation ids stay below 2**31, seqs below 2**32.
    # `parts` is NULL for a message that is one text part (most are): its text is the `text` column, which
    # the JSON repeated (a plain message's row is about half as long).
    """
    CREATE TABLE messages_v7 (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL AS (id >> 32) VIRTUAL,
        seq INTEGER NOT NULL AS (id & 4294967295) VIRTUAL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        parts TEXT,
        model TEXT,
        turn_id TEXT,
        created_at REAL NOT NULL,
        turn TEXT
    );
    INSERT INTO messages_v7 (id, role, text, parts, model, turn_id, created_at, turn)
        SELECT (conversation_id << 32) + seq, role, text,
            CASE WHEN CAST(parts AS TEXT) = '[{"type":"text","text":' || json_quote(text) || '}]' THEN NULL ELSE parts END,
            model, turn_id, created_at, turn FROM messages
        ORDER BY conversation_id, seq;
    DROP TABLE messages;
    ALTER TABLE messages_v7 RENAME TO messages;
    CREATE TRIGGER message_fts_delete AFTER DELETE ON messages BEGIN
        DELETE FROM message_fts WHERE rowid = OLD.id;
    END;
    """,
    # 8: the full-text index keeps no copy of the text. It was an FTS5 table with its own content (every
    # message's text stored twice, ~40% of the file); it now reads `messages.text` by `id` (external
    # content), and `Store.index_pending` adds a message with a plain INSERT (its REPLACE also read and
    # deleted the copy). An external-content index is told what to remove: FTS5's 'delete' command with
    # the text it indexed, and only for a message it did index (deleting terms it never had corrupts it).
    # Messages are never edited, and the trigger checks the conversation's `indexed_seq` (`Store.delete`
    # deletes the messages before their conversation row). What was indexed is indexed again here.
    """
    DROP TRIGGER message_fts_delete;
    DROP TABLE message_fts;
    CREATE VIRTUAL TABLE message_fts USING fts5(
        text, content = 'messages', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2');
    INSERT INTO message_fts (rowid, text)
        SELECT m.id, m.text FROM conversations c
        JOIN messages m ON m.id > (c.id << 32) AND m.id <= (c.id << 32) + c.indexed_seq
        WHERE m.text != '';
    CREATE TRIGGER message_fts_delete AFTER DELETE ON messages
    WHEN OLD.text != '' AND OLD.seq <= (SELECT indexed_seq FROM conversations WHERE id = OLD.conversation_id)
    BEGIN
        INSERT INTO message_fts (message_fts, rowid, text) VALUES ('delete', OLD.id, OLD.text);
    END;
    """,
    # 9: a commit writes its message rows and nothing else (bench T7: the conversation row's counters and
    # the spend ledger's row were two of a turn's three WAL pages). Everything derived from messages is
    # folded in later, in batches, by `Store.fold_pending`: the full-text index (as since v4), the row's
    # `last_seq`, `message_count`, `last_model` and `updated_at`, and the spend ledger. `folded_seq` (was
    # `indexed_seq`) is how far a conversation's messages are folded; reads add the messages after it
    # (`Store.get`, the ledger's sums). The index now holds every folded message, empty texts too (none
    # were indexed, and FTS5's integrity-check counts a content row the index lacks as corruption), so the
    # delete trigger asks only whether a message was folded. Here everything v8 left out is indexed, so
    # every row is folded: v8's counters and ledger already counted those messages.
    """
    INSERT INTO message_fts (rowid, text)
        SELECT m.id, m.text FROM conversations c
        JOIN messages m ON m.id > (c.id << 32) AND m.id <= (c.id << 32) + c.last_seq
        WHERE m.text = '' OR m.id > (c.id << 32) + c.indexed_seq;
    UPDATE conversations SET indexed_seq = last_seq WHERE indexed_seq < last_seq;
    DROP TRIGGER message_fts_delete;
    ALTER TABLE conversations RENAME COLUMN indexed_seq TO folded_seq;
    CREATE TRIGGER message_fts_delete AFTER DELETE ON messages
    WHEN OLD.seq <= (SELECT folded_seq FROM conversations WHERE id = OLD.conversation_id)
    BEGIN
        INSERT INTO message_fts (message_fts, rowid, text) VALUES ('delete', OLD.id, OLD.text);
    END;
    """,
    # 10: `Store.list` reads the most recently updated rows through an index and computes the live columns
    # (the tail's, v9) only for those and the conversations with a tail; before, it ordered every row by
    # its four subqueries (19 ms at 10,000 conversations). Only a fold and `Store.update` write the column.
    """
    CREATE INDEX conversations_by_update ON conversations(updated_at);
    """,
]

VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring `db` to VERSION; returns the version found. Refuses a database newer than this code."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > VERSION:
        raise RuntimeError(f"database schema v{found} is newer than this chatd (v{VERSION}); upgrade chatd")
    for version in range(found + 1, VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return found


def _statements(script: str) -> list[str]:
    """Split a migration into statements; a trigger body's `;` does not end its CREATE TRIGGER."""
    out, buf = [], ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf)
            buf = ""
    return out
