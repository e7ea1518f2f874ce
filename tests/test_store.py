"""The store on a real SQLite file: atomic turns, seqs, migrations forward, provenance."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time

import msgspec
import pytest

from chatd import protocol as p
from chatd.errors import StorageError
from chatd.store import NewMessage, Store, TurnRecord
from chatd.store import schema
from chatd.store.search import ContextStore
from helpers import commit_and_die, fill_volume


def _turn(turn_id: str, model: str = "echo") -> TurnRecord:
    return TurnRecord(id=turn_id, model=model, provider="echo", attempts=[p.Attempt(model=model, outcome="ok")],
                      usage=p.Usage(input_tokens=3, output_tokens=5), cost=0.25, finish_reason="stop",
                      started_at=10.0, finished_at=10.5)


def _pair(text: str) -> list[NewMessage]:
    return [NewMessage(role="user", parts=[p.TextPart(text)]),
            NewMessage(role="assistant", parts=[p.TextPart("re: " + text)], model="echo")]


def test_turns_commit_atomically_with_provenance(tmp_path):
    store = Store(str(tmp_path / "chatd.db"))
    conv = store.create("c")
    stored = store.commit_turn(conv.id, _turn("t1"), _pair("one"))
    assert [(m.seq, m.role, m.text) for m in stored] == [(1, "user", "one"), (2, "assistant", "re: one")]
    store.commit_turn(conv.id, _turn("t2"), _pair("two"))
    row = store.get("c")
    assert (row.last_seq, row.message_count, row.last_model) == (4, 4, "echo")
    prov = store.turn(conv.id, "t1")
    assert prov["usage"]["outputTokens"] == 5 and prov["cost"] == 0.25 and prov["latencyMs"] == 500.0
    assert prov["attempts"][0]["outcome"] == "ok"
    # a write failing inside the transaction (after the counters moved) leaves nothing behind
    unencodable = [*_pair("three"), NewMessage(role="tool", parts=[object()])]  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.commit_turn(conv.id, _turn("t3"), unencodable)
    row = store.get("c")
    assert (row.last_seq, row.message_count) == (4, 4)
    assert [m.text for m in store.messages(conv.id)] == ["one", "re: one", "two", "re: two"]
    assert store.turn(conv.id, "t3") is None and ContextStore(store).spent(conv.id) == (16, 0.5)
    with pytest.raises(LookupError):
        store.commit_turn(9999, _turn("t9"), _pair("nowhere"))


def test_create_returns_the_stored_row_and_refuses_a_taken_name(tmp_path):
    from chatd.errors import AlreadyExists

    store = Store(str(tmp_path / "chatd.db"))
    made = store.create("c", system="s", models=["echo"], model_weights=[2.0], prefer_model="weighted",
                        params={"temperature": 0.5})
    assert made == store.get_by_id(made.id) == store.get("c")
    assert store.create("plain") == store.get("plain")
    with pytest.raises(AlreadyExists, match="'c' already exists"):
        store.create("c")
    assert [c.name for c in store.list()] == ["plain", "c"] and not store._db.in_transaction


def test_clear_keeps_seq_counter_and_delete_cascades(tmp_path):
    store = Store(str(tmp_path / "chatd.db"))
    conv = store.create("c", system="sys")
    store.commit_turn(conv.id, _turn("t1"), _pair("one"))
    cleared = store.clear(conv.id)
    assert (cleared.message_count, cleared.last_seq, cleared.system) == (0, 2, "sys")
    again = store.commit_turn(conv.id, _turn("t2"), _pair("two"))
    assert [m.seq for m in again] == [3, 4]
    store.delete(conv.id)
    db = sqlite3.connect(str(tmp_path / "chatd.db"))
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_schema_migrates_forward_keeping_data(tmp_path):
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path, isolation_level=None)
    for statement in schema.MIGRATIONS[0].split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO conversations (id, name, created_at, updated_at, last_seq, message_count)"
               " VALUES (1, 'old', 1, 1, 2, 2)")
    db.execute("INSERT INTO turns (id, conversation_id, model, started_at, finished_at, latency_ms)"
               " VALUES ('t1', 1, 'echo', 1, 2, 1000)")
    db.execute("INSERT INTO messages VALUES (1, 1, 'user', 'hi', '[{\"type\":\"text\",\"text\":\"hi\"}]',"
               " NULL, 't1', 1)")
    db.close()
    store = Store(path)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION >= 2
    assert store.turn(1, "t1")["model"] == "echo"
    assert store.messages(1)[0].parts == [p.TextPart("hi")]
    stored = store.commit_turn(1, _turn("t2"), _pair("new"))
    assert [m.seq for m in stored] == [3, 4]
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # migration 3 indexed the old message, migration 4 marked it done: only the new turn is pending
    assert [h.seq for h in ContextStore(store).search("hi")] == [1]
    assert store.fold_pending() == 0 and [h.seq for h in ContextStore(store).search("new")] == [3, 4]


def _database_at(path: str, version: int) -> sqlite3.Connection:
    """A database built by the first `version` migrations, as that release left it (autocommit)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for migration in schema.MIGRATIONS[:version]:
        for statement in schema._statements(migration):
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {version}")
    db.execute("COMMIT")
    return db


def test_migration_5_folds_the_spend_ledger_into_one_row_per_conversation_and_day(tmp_path):
    """A v4 ledger (one row per turn) keeps its sums; later turns, summaries and a delete add to them."""
    path = str(tmp_path / "v4.db")
    db = _database_at(path, 4)
    db.execute("INSERT INTO conversations (id, name, created_at, updated_at) VALUES (1, 'a', 1, 1), (2, 'b', 1, 1)")
    rows = [(1, "2026-12-01", 10, 0.5), (1, "2026-12-01", 5, 0.25), (1, "2026-12-02", 7, 1.0),
            (2, "2026-12-01", 1, 0.125), (0, "2026-12-01", 100, 2.0)]
    db.executemany("INSERT INTO spend VALUES (?, ?, ?, ?)", rows)
    db.close()

    store = Store(path)
    ledger = ContextStore(store)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
    assert store._db.execute("SELECT conversation_id, day, tokens, cost FROM spend ORDER BY 1, 2").fetchall() == [
        (0, "2026-12-01", 100, 2.0), (1, "2026-12-01", 15, 0.75), (1, "2026-12-02", 7, 1.0),
        (2, "2026-12-01", 1, 0.125)]
    assert ledger.spent(1) == (22, 1.75)
    store.commit_turn(1, _turn("t1"), _pair("x"))  # finished 1970-01-01: 8 tokens, 0.25
    store.commit_turn(1, _turn("t2"), _pair("y"))
    ledger.add_spend(1, 4, 0.5)  # a summary, today
    ledger.add_spend(1, 4, 0.5)
    assert ledger.spent(1) == (22 + 16 + 8, 1.75 + 0.5 + 1.0)
    assert ledger.spent_today() == (8, 1.0)
    assert store.fold_pending() == 4  # the turns reach the ledger (v9), the sums stay
    assert store._db.execute("SELECT count(*) FROM spend WHERE conversation_id = 1").fetchone()[0] == 4
    assert ledger.spent(1) == (22 + 16 + 8, 1.75 + 0.5 + 1.0) and ledger.spent_today() == (8, 1.0)
    store.delete(1)  # its spending moves to conversation 0, merged into 0's rows of the same days
    assert ledger.spent(1) == (0, 0) and ledger.spent(0) == (100 + 46, 2.0 + 3.25)
    assert store._db.execute("SELECT tokens FROM spend WHERE conversation_id = 0 AND day = '2026-12-01'"
                             ).fetchone() == (115,)
    assert ledger.spent(2) == (1, 0.125) and ledger.spent_today() == (8, 1.0)
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_migration_6_moves_provenance_onto_each_turns_last_message(tmp_path):
    """A v5 store's turns (one with a tool round, one copied by a fork) keep their provenance and totals."""
    path = str(tmp_path / "v5.db")
    db = _database_at(path, 5)
    db.execute("INSERT INTO conversations (id, name, created_at, updated_at, last_seq, message_count)"
               " VALUES (1, 'a', 1, 1, 5, 5), (2, 'fork', 1, 1, 2, 2)")
    text = '[{"type":"text","text":"x"}]'
    for conv, seq, role, turn_id in [(1, 1, "user", "t1"), (1, 2, "assistant", "t1"), (1, 3, "tool", "t1"),
                                     (1, 4, "user", "t2"), (1, 5, "assistant", "t2"),
                                     (2, 1, "user", "t1"), (2, 2, "assistant", "t1")]:
        db.execute("INSERT INTO messages VALUES (?, ?, ?, 'x', ?, NULL, ?, 1)", (conv, seq, role, text, turn_id))
    for turn_id, usage, cost in [("t1", '{"inputTokens":3,"outputTokens":5}', 0.25),
                                 ("t2", '{"inputTokens":7,"outputTokens":1,"cachedTokens":2}', 0.5)]:
        db.execute("INSERT INTO turns VALUES (1, ?, 'echo', 'echo', '[{\"model\":\"echo\",\"outcome\":\"ok\"}]',"
                   " ?, ?, 'stop', 10.0, 10.5, 500.0)", (turn_id, usage, cost))
    db.close()

    store = Store(path)
    ctx = ContextStore(store)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
    assert store._db.execute("SELECT conversation_id, seq FROM messages WHERE turn IS NOT NULL ORDER BY 1, 2"
                             ).fetchall() == [(1, 3), (1, 5)]  # each turn's last row; the fork's copies none
    assert store.turn(1, "t1") == {"id": "t1", "model": "echo", "provider": "echo",
                                   "attempts": [{"model": "echo", "outcome": "ok"}],
                                   "usage": {"inputTokens": 3, "outputTokens": 5}, "cost": 0.25,
                                   "finishReason": "stop", "startedAt": 10.0, "finishedAt": 10.5, "latencyMs": 500.0}
    assert store.turn(2, "t1") is None
    totals = ctx.totals(1)
    assert (totals.input_tokens, totals.output_tokens, totals.cached_tokens, totals.cost, totals.turns) == (10, 6, 2, 0.75, 2)
    assert ctx.totals(2).turns == 0
    assert "turns" not in {r[0] for r in store._db.execute("SELECT name FROM sqlite_master")}
    store.commit_turn(1, _turn("t3"), _pair("new"))  # 8 tokens, 0.25: totals and the ledger (v5 trigger: 16, 0.75) count it
    assert ctx.totals(1).turns == 3 and ctx.totals(1).cost == 1.0 and ctx.spent(1) == (24, 1.0)
    assert store.turn(1, "t3")["latencyMs"] == 500.0
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_migration_7_keys_messages_by_conversation_and_seq_in_one_rowid(tmp_path):
    """A v6 store's messages (two conversations, one indexed, one pending) keep their order, search, provenance,
    forks and deletes; the FTS rowid is the message's id."""
    path = str(tmp_path / "v6.db")
    db = _database_at(path, 6)
    db.execute("INSERT INTO conversations (id, name, created_at, updated_at, last_seq, message_count, indexed_seq)"
               " VALUES (1, 'a', 1, 1, 4, 3, 4), (2, 'b', 1, 1, 2, 2, 0)")
    prov = '{"model":"echo","usage":{"inputTokens":3,"outputTokens":5},"cost":0.25}'
    tricky = 'he said "fox"\n\ttab \\ é/日本 \x01 \x7f'  # escapes msgspec and SQLite's json_quote must agree on
    rows = [(2, 2, "assistant", "blue whale", None), (1, 4, "assistant", "red fox", prov), (1, 1, "user", "red", None),
            (2, 1, "user", "blue", None), (1, 3, "user", tricky, None)]  # seq 2 of 'a' was deleted
    for conv, seq, role, text, turn in rows:  # parts as the v6 code wrote them: msgspec's JSON, bound as bytes
        db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, NULL, 't1', 1, ?)",
                   (conv, seq, role, text, msgspec.json.encode([p.TextPart(text)]), turn))
    two = [p.TextPart("blue"), p.ToolCallPart(id="c1", name="look", arguments={"at": "sea"})]
    db.execute("UPDATE messages SET parts = ? WHERE conversation_id = 2 AND seq = 1", (msgspec.json.encode(two),))
    db.executemany("INSERT INTO message_fts (rowid, text) VALUES (?, ?)",
                   [((1 << 32) + seq, text) for conv, seq, _, text, _ in rows if conv == 1])
    db.close()

    store = Store(path)
    ctx = ContextStore(store)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION >= 7
    assert [(m.seq, m.parts) for m in store.messages(1)] == [(1, [p.TextPart("red")]), (3, [p.TextPart(tricky)]),
                                                              (4, [p.TextPart("red fox")])]
    assert [m.text for m in store.messages(1, after_seq=1)] == [tricky, "red fox"]
    assert store.messages(2)[0].parts == two
    # a message of one text part keeps its text once: `parts` is NULL (the v6 rows' JSON matched exactly)
    assert store._db.execute("SELECT count(*) FROM messages WHERE parts IS NOT NULL").fetchone() == (1,)
    assert store.messages(1, after_seq=2**63 - 1) == [] and [m.seq for m in store.messages(2)] == [1, 2]
    assert store.turn(1, "t1")["cost"] == 0.25 and ctx.totals(1).turns == 1 and ctx.totals(2).turns == 0
    assert sorted((h.conversation, h.seq) for h in ctx.search("red")) == [("a", 1), ("a", 4)]
    assert sorted((h.conversation, h.seq) for h in ctx.search("blue", conversation_id=2)) == [("b", 1), ("b", 2)]
    assert ctx.search("blue", conversation_id=1) == []
    assert store._db.execute("SELECT id FROM messages WHERE conversation_id = 2 AND seq = 2").fetchone() == \
        ((2 << 32) + 2,)
    fork = store.fork(store.get("a"), "a2", at_seq=3)
    assert [(m.seq, m.text) for m in store.messages(fork.id)] == [(1, "red"), (3, tricky)]
    assert (fork.message_count, fork.last_seq) == (2, 3)
    stored = store.commit_turn(1, _turn("t2"), _pair("new"))
    assert [m.seq for m in stored] == [5, 6] and [m.seq for m in store.messages(1)][-2:] == [5, 6]
    store.delete(1)
    assert store._db.execute("SELECT count(*) FROM messages WHERE conversation_id = 1").fetchone()[0] == 0
    assert [(h.conversation, h.seq) for h in ctx.search("red")] == [("a2", 1)]
    assert [m.text for m in store.messages(fork.id)] == ["red", tricky]
    _assert_index_whole(store)
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_migration_8_indexes_what_was_indexed_without_a_copy_of_the_text(tmp_path):
    """v7's index kept its own copy of every text; v8 reads `messages`. What v7 had indexed is indexed
    again, what was pending is indexed by v9, and deletes keep the index whole."""
    path = str(tmp_path / "v7.db")
    db = _database_at(path, 7)
    db.execute("INSERT INTO conversations (id, name, created_at, updated_at, last_seq, message_count, indexed_seq)"
               " VALUES (1, 'a', 1, 1, 3, 3, 2), (2, 'b', 1, 1, 2, 2, 0)")
    rows = [(1, 1, "otter pup"), (1, 2, "otter den"), (1, 3, "pending otter"), (2, 1, "heron"), (2, 2, "")]
    db.executemany("INSERT INTO messages (id, role, text, created_at) VALUES (?, 'user', ?, 1)",
                   [((conv << 32) + seq, text) for conv, seq, text in rows])
    db.executemany("INSERT INTO message_fts (rowid, text) VALUES (?, ?)",
                   [((1 << 32) + seq, text) for conv, seq, text in rows if conv == 1 and seq <= 2])
    db.close()

    store = Store(path)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION >= 9
    _assert_index_whole(store)
    assert _fts_rows(store) == [((1 << 32) + 1, "otter pup"), ((1 << 32) + 2, "otter den"),
                                ((1 << 32) + 3, "pending otter"), ((2 << 32) + 1, "heron"), ((2 << 32) + 2, "")]
    assert store._db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'message_fts_content'").fetchone() == (0,)
    assert store.fold_pending() == 0 and store.pending == set()
    store.delete(2)
    _assert_index_whole(store)
    ctx = ContextStore(store)
    assert sorted(h.seq for h in ctx.search("otter")) == [1, 2, 3]
    assert [h.snippet for h in ctx.search("den")] == ["otter **den**"]  # the snippet is cut from messages.text
    store.clear(1)
    assert _fts_rows(store) == [] and ctx.search("otter") == []
    store._db.execute("INSERT INTO message_fts (message_fts, rank) VALUES ('integrity-check', 1)")


def test_migration_9_folds_what_v8_left_unindexed_without_counting_it_twice(tmp_path):
    """v8's counters and ledger counted every message; its index lagged (`indexed_seq`) and left out empty
    texts. After v9 every row is folded: the counters and the ledger are as they were, the index is whole."""
    path = str(tmp_path / "v8.db")
    db = _database_at(path, 8)
    db.execute("INSERT INTO conversations (id, name, created_at, updated_at, last_model, last_seq, message_count,"
               " indexed_seq) VALUES (1, 'a', 1, 7, 'echo', 5, 4, 2), (2, 'b', 1, 1, NULL, 0, 0, 0)")
    prov = '{"model":"echo","usage":{"inputTokens":3,"outputTokens":5},"cost":0.25,"finishedAt":10.5}'
    rows = [(1, "user", "otter", None), (2, "assistant", "", prov), (4, "user", "den", None),
            (5, "assistant", "pending", prov)]  # seq 3 was deleted; seq 2 is a tool call with no text
    db.executemany("INSERT INTO messages (id, role, text, turn, created_at) VALUES (?, ?, ?, ?, 5)",
                   [((1 << 32) + seq, role, text, turn) for seq, role, text, turn in rows])
    db.execute("INSERT INTO message_fts (rowid, text) VALUES (?, 'otter')", ((1 << 32) + 1,))
    db.execute("INSERT INTO spend VALUES (1, '1970-01-01', 16, 0.5)")
    db.close()

    store = Store(path)
    ctx = ContextStore(store)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION >= 9
    assert store._db.execute("SELECT id, folded_seq, last_seq, message_count FROM conversations ORDER BY id"
                             ).fetchall() == [(1, 5, 5, 4), (2, 0, 0, 0)]
    assert store.pending == set() and store.fold_pending() == 0
    a = store.get("a")
    assert (a.last_seq, a.message_count, a.last_model, a.updated_at) == (5, 4, "echo", 7)
    assert ctx.spent(1) == (16, 0.5)  # not 32: the ledger had those turns
    _assert_index_whole(store)
    assert [h.seq for h in ctx.search("pending")] == [5]
    assert [m.seq for m in store.commit_turn(1, _turn("t"), _pair("new"))] == [6, 7]
    store.clear(1)  # deletes indexed rows, the empty one included: the trigger now asks only `folded_seq`
    _assert_index_whole(store)
    assert store.get("a").last_seq == 7 and ctx.spent(1) == (24, 0.75)


def _snapshot(store: Store, ctx: ContextStore) -> tuple:
    convs = [(c.name, c.last_seq, c.message_count, c.last_model, c.updated_at) for c in store.list()]
    return convs, ctx.spent(1), ctx.spent(2), ctx.spent_today(), store.get("a"), store.get_by_id(2)


def test_a_commit_writes_only_its_messages_and_every_read_is_exact_before_and_after_a_fold(tmp_path):
    """Schema v9: a commit changes its message rows only (the conversation row and the ledger wait for a
    fold); reads add the tail, so conversations, lists and spending read the same before, between and
    after budgeted folds, and the rows then hold what the reads said."""
    store = Store(str(tmp_path / "chatd.db"))
    ctx = ContextStore(store)
    a, b = store.create("a", models=["echo"]), store.create("b")
    now = time.time()
    today = msgspec.structs.replace(_turn("today", model="other"), started_at=now, finished_at=now)
    for conv, turn in [(a, _turn("t1")), (b, _turn("t2")), (a, _turn("t3")), (a, today)]:
        before = store._db.total_changes
        store.commit_turn(conv.id, turn, _pair(turn.id))
        assert store._db.total_changes - before == 2
    assert store._db.execute("SELECT last_seq, message_count, last_model, folded_seq FROM conversations"
                             ).fetchall() == [(0, 0, None, 0)] * 2
    assert store._db.execute("SELECT count(*) FROM spend").fetchone() == (0,)
    assert store.pending == {a.id, b.id}
    live = _snapshot(store, ctx)
    assert live[0] == [("a", 6, 6, "other", pytest.approx(now, abs=60)), ("b", 2, 2, "echo", live[0][1][4])]
    assert live[1:4] == ((24, 0.75), (8, 0.25), (8, 0.25))
    assert store.fold_pending(budget=3) == 3 and store.pending == {a.id, b.id}  # half a's second turn
    assert _snapshot(store, ctx) == live
    assert store.fold_pending() == 5 and store.pending == set()
    assert _snapshot(store, ctx) == live
    assert store._db.execute("SELECT last_seq, message_count, last_model, folded_seq FROM conversations"
                             " ORDER BY id").fetchall() == [(6, 6, "other", 6), (2, 2, "echo", 2)]
    _assert_index_whole(store)


def test_budgeted_folds_read_tails_a_budget_at_a_time_and_skip_what_another_store_folded(tmp_path):
    """A step reads the tails of at most `budget` pending conversations at a time (a step was O(pending):
    42 ms for 1,000 conversations' backlog in steps of 100, now 27 ms); conversations another store on
    the file already folded have empty tails and just leave the pending set."""
    path = str(tmp_path / "chatd.db")
    a = Store(path)
    convs = [a.create(f"c{i}") for i in range(6)]
    for conv in convs:
        a.commit_turn(conv.id, _turn(f"t{conv.id}"), _pair("one"))
    b = Store(path)
    assert b.pending == {c.id for c in convs} and b.fold_pending() == 12
    b.close()
    for conv in convs[1::2]:
        a.commit_turn(conv.id, _turn(f"u{conv.id}"), _pair("two"))
    before = [(c.name, c.last_seq, c.message_count) for c in a.list()]
    steps = []
    while a.pending:
        steps.append(a.fold_pending(budget=3))
    assert sum(steps) == 6 and max(steps) <= 3 and len(steps) <= 4, steps
    assert [(c.name, c.last_seq, c.message_count) for c in a.list()] == before
    assert sorted(before)[1] == ("c1", 4, 4) and sorted(before)[0] == ("c0", 2, 2)


def _list_traced(store: Store, query: str | None, limit: int) -> tuple[list[str], int]:
    steps = [0]
    store._db.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 1)
    names = [c.name for c in store.list(query, limit=limit)]
    store._db.set_progress_handler(None, 1)
    return names, steps[0]


def test_list_reads_the_newest_rows_and_the_pending_ones_not_every_conversation(tmp_path):
    """Schema v10: `list` walks an index for the `limit` newest rows and adds the pending conversations (a
    tail only makes a conversation newer); its order is the live one, as if every row were read, and its
    cost does not grow with the number of conversations."""
    store = Store(str(tmp_path / "chatd.db"))
    for i in range(30):
        store.create(f"c{i:03}")
    store._db.execute("UPDATE conversations SET updated_at = id")  # distinct times, c000 the oldest
    store.commit_turn(store.get("c000").id, _turn("t"), _pair("old but busy"))  # pending: its row is old
    assert store.pending == {store.get("c000").id}

    def live_order(query: str) -> list[str]:
        convs = [c for c in (store.get_by_id(i) for i in range(1, 2001)) if c is not None and query in c.name]
        return [c.name for c in sorted(convs, key=lambda c: (c.updated_at, c.id), reverse=True)]

    small, steps_small = _list_traced(store, None, 5)
    assert small == live_order("")[:5] == ["c000", "c029", "c028", "c027", "c026"]
    assert _list_traced(store, "c00", 3)[0] == live_order("c00")[:3] == ["c000", "c009", "c008"]
    assert _list_traced(store, "c01_", 2)[0] == []  # LIKE's wildcards are the name's own characters
    for i in range(30, 2000):
        store.create(f"c{i:03}")
    store._db.execute("UPDATE conversations SET updated_at = id WHERE id > 30")
    big, steps_big = _list_traced(store, None, 5)
    assert big == live_order("")[:5] == ["c000", "c1999", "c1998", "c1997", "c1996"]
    assert steps_big == steps_small  # the same VM instructions at 30 and at 2,000 conversations
    assert store.fold_pending() == 2 and store.pending == set()
    assert _list_traced(store, None, 5)[0] == big  # the fold moved c000's row time to its tail's


def test_clear_delete_fork_and_import_fold_so_nothing_is_lost_or_counted_twice_and_tails_stay_whole(tmp_path):
    """Clear and delete fold first; fork and import fold their copies at once (copies can have gaps, a
    tail must not: the counters are read from its last row)."""
    store = Store(str(tmp_path / "chatd.db"))
    ctx = ContextStore(store)
    a = store.create("a")
    for i in range(3):
        store.commit_turn(a.id, _turn(f"t{i}", model="m1"), _pair(f"apple {i}"))
    fork = store.fork(store.get("a"), "f", at_seq=4)  # a's tail is not folded; the fork's copies are
    assert (fork.last_seq, fork.message_count, fork.last_model) == (4, 4, "m1") and ctx.spent(fork.id) == (0, 0)
    assert store.pending == {a.id}
    cleared = store.clear(a.id)
    assert (cleared.last_seq, cleared.message_count) == (6, 0) and ctx.spent(a.id) == (24, 0.75)
    assert [m.seq for m in store.commit_turn(a.id, _turn("t3"), _pair("pear"))] == [7, 8]  # seqs not reused
    gappy = store.fork(store.get("a"), "g", at_seq=None)  # seqs 7 and 8 only
    store.commit_turn(gappy.id, _turn("t4", model="m2"), _pair("plum"))
    g = store.get("g")
    assert (g.last_seq, g.message_count, g.last_model) == (10, 4, "m2")
    doc = p.ExportDocument(format="chatd.conversation", version=1,
                           conversation=p.ExportedConversation(name="g", last_seq=12, created_at=1, updated_at=2),
                           messages=[p.ExportedMessage(seq=m.seq, role=m.role, parts=m.parts, created_at=m.created_at)
                                     for m in store.messages(gappy.id)])
    imported = store.import_conversation("i", doc)  # its last_seq is above its last message's
    assert (imported.last_seq, imported.message_count) == (12, 4)
    store.commit_turn(imported.id, _turn("t5"), _pair("fig"))
    assert (store.get("i").last_seq, store.get("i").message_count) == (14, 6)
    store.delete(a.id)  # its unfolded turn's spending stays, as conversation 0's
    assert ctx.spent(0) == (32, 1.0) and store.get("a") is None
    before = [(c.name, c.last_seq, c.message_count, c.last_model) for c in store.list()]
    assert store.fold_pending() == 4  # g's and i's turns
    assert [(c.name, c.last_seq, c.message_count, c.last_model) for c in store.list()] == before
    _assert_index_whole(store)
    assert [h.conversation for h in ctx.search("apple")] == ["f"] * 4  # two turns: questions and answers


def test_what_a_dead_process_left_unfolded_is_found_when_the_store_opens(tmp_path):
    """A process that dies before it folds (kill -9, or `os._exit`: no `close`) leaves a tail; reads count it
    at once, and the next store to open the file finds it pending, so search and the ledger get it."""
    path = str(tmp_path / "chatd.db")
    first = Store(path)
    first.create("a")
    first.fold_pending()
    first.close()
    commit_and_die(path, "a", "walrus")
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT folded_seq, message_count FROM conversations").fetchall() == [(0, 0)]
    raw.close()
    store = Store(path)
    ctx = ContextStore(store)
    conv = store.get("a")
    assert store.pending == {conv.id} and (conv.last_seq, conv.message_count) == (1, 1)
    assert ctx.spent(conv.id) == (5, 0.5) and ctx.spent_today() == (5, 0.5)
    assert [h.seq for h in ctx.search("walrus")] == [1] and store.pending == set()
    assert ctx.spent_today() == (5, 0.5)


def test_an_append_writes_few_pages(tmp_path):
    """Appending to a long conversation writes its last message page, and now and then a new page and its
    parent: at most 1.5 pages a turn on average (the v6 schema's index B-tree wrote 5.2, rebalancing its
    last three leaves on every fill; v8 also wrote the conversation row and the ledger, 3.4). Folding
    those turns later, in one batch, writes the rest: at most half a page a turn."""
    path = str(tmp_path / "chatd.db")
    store = Store(path)
    store._db.execute("PRAGMA wal_autocheckpoint=0")  # the WAL holds every frame written until it is counted
    conv = store.create("long")
    for i in range(300):
        store.commit_turn(conv.id, _turn(f"t{i}"), _pair(f"turn {i}: a message of ordinary length for a chat"))
    _wal_frames_after_a_checkpoint(path)  # the WAL restarts with the next write
    turns = 200
    for i in range(turns):
        store.commit_turn(conv.id, _turn(f"u{i}"), _pair(f"turn {i}: a message of ordinary length for a chat"))
    assert _wal_frames_after_a_checkpoint(path) / turns <= 1.5
    store.fold_pending()
    assert _wal_frames_after_a_checkpoint(path) / turns <= 0.5  # 0.1 here: the index's segment, the row, the ledger
    store.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "new.db")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer than this chatd"):
        Store(path)


def _commit_traced(store: Store, conv_id: int, turn_id: str) -> tuple[list[str], int]:
    """The statements one commit runs, and how many SQLite VM instructions they took."""
    statements: list[str] = []
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    store._db.set_trace_callback(statements.append)
    store._db.set_progress_handler(step, 1)
    store.commit_turn(conv_id, _turn(turn_id), _pair(turn_id))
    store._db.set_progress_handler(None, 1)
    store._db.set_trace_callback(None)
    return statements, steps[0]


def test_append_reads_no_history(tmp_path):
    """O(1) appends: a commit runs the same statements, and as many SQLite VM instructions, at 10 and at
    2,000 messages, with a tail (messages not folded yet) of 2 and of 2,000."""
    store = Store(str(tmp_path / "chatd.db"))
    short, long = store.create("short"), store.create("long")
    for i in range(5):
        store.commit_turn(short.id, _turn(f"s{i}"), _pair(str(i)))
    store.fold_pending()
    store.commit_turn(short.id, _turn("s5"), _pair("5"))
    for i in range(1000):
        store.commit_turn(long.id, _turn(f"t{i}"), _pair(str(i)))
    at_10, steps_10 = _commit_traced(store, short.id, "s6")
    at_2000, steps_2000 = _commit_traced(store, long.id, "last")
    reads = []
    for name in ("short", "long"):  # a read of the conversation: its row and one seek per counter
        steps = [0]
        store._db.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 1)
        conv = store.get(name)
        store._db.set_progress_handler(None, 1)
        reads.append((steps[0], conv.message_count))
    assert reads[0][0] == reads[1][0] and [n for _, n in reads] == [14, 2002]
    shape = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b")  # the values bound: texts, numbers
    assert [shape.sub("?", s) for s in at_2000] == [shape.sub("?", s) for s in at_10]
    assert steps_2000 == steps_10
    # BEGIN, the last seq (a seek), 2 x INSERT message (no trigger runs), COMMIT: the row and the ledger wait
    assert [s.split()[0] for s in at_10] == ["BEGIN", "SELECT", "INSERT", "INSERT", "COMMIT"]


def _fts_rows(store: Store) -> list[tuple[int, str]]:
    """The messages in the full-text index. Since v8 it keeps no text of its own (it reads `messages`, so
    a SELECT on it lists every message); its docsize table has a row for each message it indexed."""
    return store._db.execute("SELECT d.id, m.text FROM message_fts_docsize d JOIN messages m ON m.id = d.id"
                             " ORDER BY d.id").fetchall()


def _assert_index_whole(store: Store) -> None:
    """Every message is indexed (since v9 empty texts too), and FTS5 finds the index exactly what those texts
    tokenize to (integrity-check with rank 1 compares it with the content; a 'delete' of terms it never had,
    or a content row it lacks, fails it)."""
    everything = store._db.execute("SELECT id, text FROM messages ORDER BY id").fetchall()
    assert _fts_rows(store) == everything
    store._db.execute("INSERT INTO message_fts (message_fts, rank) VALUES ('integrity-check', 1)")


def test_commits_leave_the_search_index_to_fold_pending_and_search_sees_everything(tmp_path):
    """Schema v4: a commit writes no FTS pages; a search first indexes what is pending, so it misses nothing."""
    store = Store(str(tmp_path / "chatd.db"))
    ctx = ContextStore(store)
    conv = store.create("c")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.commit_turn(conv.id, _turn("t1"), _pair("zebra crossing"))
    store._db.set_trace_callback(None)
    assert not any("fts" in s.lower() for s in statements) and _fts_rows(store) == []
    assert [(h.conversation, h.seq) for h in ctx.search("zebra")] == [("c", 1), ("c", 2)]
    _assert_index_whole(store)
    assert store.fold_pending() == 0  # nothing twice


def test_fold_pending_in_budgeted_steps_covers_forks_imports_and_clears(tmp_path):
    store = Store(str(tmp_path / "chatd.db"))
    a = store.create("a")
    for i in range(30):
        store.commit_turn(a.id, _turn(f"a{i}"), _pair(f"apple {i}"))
    fork = store.fork(store.get("a"), "a-fork", at_seq=10)
    b = store.create("b")
    store.commit_turn(b.id, _turn("b0"), _pair("banana"))
    store.clear(b.id)  # its messages are gone before they were ever indexed
    store.commit_turn(b.id, _turn("b1"), _pair("cherry"))
    steps = []
    while (n := store.fold_pending(budget=7)) > 0:
        steps.append(n)
        assert n <= 7
    assert sum(steps) == 60 + 2 and len(steps) >= 62 // 7  # the fork folded its copies itself
    _assert_index_whole(store)
    ctx = ContextStore(store)
    assert {h.conversation for h in ctx.search("apple", limit=100)} == {"a", "a-fork"}
    assert ctx.search("banana") == [] and [h.seq for h in ctx.search("cherry")] == [3, 4]
    store.delete(fork.id)
    _assert_index_whole(store)


# ---------------------------------------------------------------- group commit
def _committed(path: str) -> list[tuple[int, str]]:
    """(conversation id, text) of every message another connection sees: what is on disk."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT conversation_id, text FROM messages ORDER BY conversation_id, seq").fetchall()
    finally:
        db.close()


def test_turns_finishing_together_share_one_commit_and_a_failing_one_leaves_the_rest(tmp_path):
    path = str(tmp_path / "chatd.db")
    store = Store(path)
    convs = [store.create(f"c{i}") for i in range(6)]
    statements: list[str] = []

    async def main() -> list:
        store._db.set_trace_callback(statements.append)
        gone = store.create("gone")
        store.delete(gone.id)  # its turn raises LookupError inside the group
        jobs = [store.commit_turn_grouped(c.id, _turn(f"t{c.id}"), _pair(f"hi {c.id}")) for c in convs]
        jobs.insert(3, store.commit_turn_grouped(gone.id, _turn("tg"), _pair("nowhere")))
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(main())
    store._db.set_trace_callback(None)
    assert isinstance(results[3], LookupError)
    assert [[m.seq for m in r] for r in results[:3] + results[4:]] == [[1, 2]] * 6
    grouped = statements[statements.index("BEGIN IMMEDIATE", statements.index("COMMIT", 4) + 1):]
    assert grouped.count("BEGIN IMMEDIATE") == 1 and grouped.count("COMMIT") == 1  # for 6 turns
    assert grouped.count("SAVEPOINT grouped") == 7 and grouped.count("ROLLBACK TO grouped") == 1
    assert _committed(path) == [(c.id, t) for c in convs for t in (f"hi {c.id}", f"re: hi {c.id}")]
    assert not store._db.in_transaction


def test_a_plain_write_commits_the_open_group_first_and_a_late_cancel_still_returns_the_turn(tmp_path):
    path = str(tmp_path / "chatd.db")
    store = Store(path)
    a, b = store.create("a"), store.create("b")

    async def main() -> None:
        first = asyncio.ensure_future(store.commit_turn_grouped(a.id, _turn("ta"), _pair("one")))
        await asyncio.sleep(0)  # one step: its rows are written, its COMMIT is pending
        assert store._db.in_transaction and _committed(path) == []
        store.update(b.id, system="s")  # durable when it returns, so the group goes first
        assert not store._db.in_transaction and _committed(path) == [(a.id, "one"), (a.id, "re: one")]
        assert [m.seq for m in await first] == [1, 2]

        second = asyncio.ensure_future(store.commit_turn_grouped(b.id, _turn("tb"), _pair("two")))
        await asyncio.sleep(0)
        second.cancel()  # after its write: too late, the turn is stored and returned
        assert [m.seq for m in await second] == [1, 2] and not second.cancelled()
        assert (a.id, "one") in _committed(path) and (b.id, "re: two") in _committed(path)

        third = asyncio.ensure_future(store.commit_turn_grouped(b.id, _turn("tc"), _pair("three")))
        await asyncio.sleep(0)
        store.close()  # closing commits what is pending
        assert [m.seq for m in await third] == [3, 4]

    asyncio.run(main())
    assert _committed(path)[-1] == (b.id, "re: three")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_group_whose_commit_fails_stores_none_of_it_and_the_next_group_works(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(data)], check=True)
    try:
        path = str(data / "chatd.db")
        store = Store(path)
        convs = [store.create(f"c{i}") for i in range(3)]
        store.commit_turn(convs[0].id, _turn("t0"), _pair("before"))
        fill_volume(str(data / "filler"))

        async def group(tag: str, size: int) -> list:
            return await asyncio.gather(*(store.commit_turn_grouped(c.id, _turn(f"{tag}{c.id}"), _pair(tag * size))
                                          for c in convs), return_exceptions=True)

        failed = asyncio.run(group("x", 300_000))
        assert all(isinstance(r, StorageError) and "could not be written" in str(r) for r in failed), failed
        assert _committed(path) == [(convs[0].id, "before"), (convs[0].id, "re: before")]
        assert store.get("c1").last_seq == 0 and not store._db.in_transaction
        os.unlink(data / "filler")
        assert [r[0].seq for r in asyncio.run(group("y", 1))] == [3, 1, 1]
        store.close()
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def _wal_frames_after_a_checkpoint(path: str) -> int:
    """How many frames the WAL holds, seen by a connection of its own (which checkpoints them too)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        busy, log, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
        assert (busy, copied) == (0, log)
        return log
    finally:
        db.close()


def test_background_checkpoints_restart_the_wal_off_the_commit_path_and_lose_nothing(tmp_path):
    from chatd.store.sqlite import CHECKPOINT_CHANGES, SAFETY_NET_PAGES

    path = str(tmp_path / "chatd.db")
    store = Store(path, background_checkpoints=True)
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == SAFETY_NET_PAGES
    conv = store.create("c")
    turns = 0
    while store._checkpointer._mark == 0:  # until a commit starts the pass: no commit runs beside it
        store.commit_turn(conv.id, _turn(f"t{turns}"), _pair(f"turn {turns}"))
        turns += 1
    # ~CHECKPOINT_CHANGES / 2 turns (a turn changes 2 rows since v9; creating the FTS5 table changed some too)
    assert CHECKPOINT_CHANGES // 2 - 10 <= turns <= CHECKPOINT_CHANGES // 2
    store._checkpointer._pool.submit(lambda: None).result()  # the worker's queue is done: the pass ran
    assert store.checkpoints == 1 and store._checkpointer._caught_up
    # the pass copied every frame, so the next write starts the WAL over: it holds that write's frames only
    store.commit_turn(conv.id, _turn("after"), _pair("after"))
    assert _wal_frames_after_a_checkpoint(path) < 10
    store.close()
    reopened = Store(path)
    assert reopened.get("c").message_count == 2 * (turns + 1) == len(reopened.messages(conv.id))
    reopened.close()


def test_background_checkpoints_racing_the_writer_keep_every_turn(tmp_path):
    path = str(tmp_path / "chatd.db")
    store = Store(path, background_checkpoints=True)
    convs = [store.create(f"c{k}") for k in range(4)]

    async def writes() -> None:  # grouped and plain commits back to back: the passes run behind them
        for i in range(600):
            if i % 3:
                await asyncio.gather(*(store.commit_turn_grouped(c.id, _turn(f"g{i}-{c.id}"), _pair(f"g{i}"))
                                       for c in convs))
            else:
                store.commit_turn(convs[0].id, _turn(f"p{i}"), _pair(f"p{i}"))

    asyncio.run(writes())
    passes = store.checkpoints
    store.close()  # waits for a pass in progress
    assert passes >= 3
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = dict(db.execute("SELECT conversation_id, count(*) FROM messages GROUP BY conversation_id"))
    assert counts == {convs[0].id: 2 * 600, **{c.id: 2 * 400 for c in convs[1:]}}
    assert [tuple(r) for r in db.execute("SELECT last_seq, message_count FROM conversations ORDER BY id")] == \
        [(1200, 1200)] + [(800, 800)] * 3
    db.close()
