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
            for statement in MIGRATIONS[version - 1].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return found
