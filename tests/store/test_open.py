"""Opening the database: creation, migrations from older schemas, and files that must be refused untouched."""

from __future__ import annotations

import os
import sqlite3

import pytest

from localchat.errors import StoreError
from localchat.store import ConversationStore, schema_version

# Version 1 of the schema as localchat 0.1 wrote it (before full-text search), written out by hand so
# this test keeps checking the upgrade path even after m001 is long forgotten.
V1_SCHEMA = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL DEFAULT '', model TEXT, system TEXT,
    settings TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX conversations_by_activity ON conversations (updated, id);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'partial', 'cancelled', 'error')),
    model TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, ttft REAL, tokens_per_second REAL,
    created REAL NOT NULL, updated REAL NOT NULL, UNIQUE (conversation_id, position));
PRAGMA user_version = 1;
"""


def tables(path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}
    finally:
        db.close()


def test_new_database_is_created_and_migrated(db_path):
    assert not db_path.exists()
    with ConversationStore.open(db_path) as store:
        store.add_message(store.create_conversation(model="m"), "user", "hi")
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema_version() == 3
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert {"conversations", "messages", "messages_fts", "messages_fts_insert"} <= tables(db_path)


def test_reopening_changes_nothing(db_path):
    with ConversationStore.open(db_path) as store:
        cid = store.create_conversation(model="m")
        store.add_message(cid, "user", "still here 还在")
    for _ in range(2):
        with ConversationStore.open(db_path) as store:
            assert store.conversation(cid).messages[0].content == "still here 还在"
            assert [h.message_id for h in store.search("还在")] == [1]


def test_v1_database_is_upgraded_with_its_messages_searchable(db_path):
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(db_path)
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO conversations VALUES (7, 'Old chat', 'smollm2', 'Be brief.', '{\"seed\": 1}', 100.0, 200.0)")
    db.executemany("INSERT INTO messages (conversation_id, position, role, content, status, model, completion_tokens, "
                   "created, updated) VALUES (7, ?, ?, ?, ?, ?, ?, 150.0, 150.0)",
                   [(0, "user", "旧的对话里有关键词", "complete", None, None),
                    (1, "assistant", "An interrupted answer about kubernetes", "partial", "smollm2", 9)])
    db.commit()
    db.close()

    with ConversationStore.open(db_path) as store:
        conv = store.conversation(7)
        assert (conv.title, conv.model, conv.system, conv.settings) == ("Old chat", "smollm2", "Be brief.", {"seed": 1})
        assert [(m.role, m.content, m.status, m.completion_tokens) for m in conv.messages] == [
            ("user", "旧的对话里有关键词", "complete", None),
            ("assistant", "An interrupted answer about kubernetes", "partial", 9)]
        assert [h.message_id for h in store.search("关键词")] == [1]
        assert [h.message_id for h in store.search("kubernetes")] == [2]
        store.add_message(7, "user", "新消息")
        assert [h.message_id for h in store.search("消息")] == [3]
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema_version()
    db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")  # raises if out of step
    db.close()


def refused(path, match: str) -> StoreError:
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(StoreError, match=match) as info, ConversationStore.open(path) as store:
        store.list_conversations()
        store.search("anything")
        store.conversation(1)
    if before is not None:
        assert path.read_bytes() == before, "a refused database file was modified"
    return info.value


def test_random_bytes_are_refused_untouched(db_path):
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db_path.write_bytes(os.urandom(64 * 1024))
    err = refused(db_path, "is not a SQLite database")
    assert "move the file aside" in str(err)
    assert not db_path.with_name(db_path.name + "-wal").exists()


def test_damaged_database_is_refused_untouched(db_path):
    with ConversationStore.open(db_path) as store:
        for i in range(200):
            store.add_message(store.create_conversation(model="m"), "user", f"message {i} " * 20)
    data = bytearray(db_path.read_bytes())
    page = 4096
    data[page:] = os.urandom(len(data) - page)  # keep the header page, wreck the rest
    db_path.write_bytes(bytes(data))
    refused(db_path, "cannot be read")


def test_newer_schema_is_refused_untouched(db_path):
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(db_path)
    db.executescript(V1_SCHEMA)
    db.execute(f"PRAGMA user_version = {schema_version() + 5}")
    db.commit()
    db.close()
    err = refused(db_path, "newer localchat")
    assert "upgrade localchat" in str(err)


def test_someone_elses_sqlite_database_is_refused_untouched(db_path):
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    db.execute("INSERT INTO photos (path) VALUES ('/tmp/cat.jpg')")
    db.commit()
    db.close()
    refused(db_path, "not a localchat conversation database")
    assert tables(db_path) == {"photos"}


def test_folder_in_place_of_the_file_is_refused(db_path):
    db_path.mkdir(parents=True)
    (db_path / "keep.txt").write_text("mine")
    refused(db_path, "is a folder")
    assert [p.name for p in db_path.iterdir()] == ["keep.txt"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files without permission")
def test_unreadable_file_is_refused_untouched(db_path):
    with ConversationStore.open(db_path) as store:
        store.create_conversation(model="m")
    before = db_path.read_bytes()
    db_path.chmod(0)
    try:
        with pytest.raises(StoreError, match="cannot read"):
            ConversationStore.open(db_path)
    finally:
        db_path.chmod(0o600)
    assert db_path.read_bytes() == before


def test_empty_file_becomes_a_new_database(db_path):
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db_path.touch()
    with ConversationStore.open(db_path) as store:
        assert store.list_conversations() == []
