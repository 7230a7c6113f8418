"""Schema migrations, numbered and append-only (the style of simonw/llm's `@migration` functions).

`PRAGMA user_version` records how many have run. Each runs in its own write transaction together with
its version bump, after re-reading the version inside that transaction, so two processes opening a new
or old database at once apply each migration exactly once. Never edit or reorder a released migration:
append a new one.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from localchat.store.text import search_text

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


def schema_version() -> int:
    """The version this code writes: the number of migrations it knows."""
    return len(MIGRATIONS)


@migration
def m001_conversations(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            model TEXT,
            system TEXT,
            settings TEXT NOT NULL DEFAULT '{}',  -- JSON object
            created REAL NOT NULL,                -- unix seconds
            updated REAL NOT NULL                 -- last activity
        )"""
    )
    db.execute("CREATE INDEX conversations_by_activity ON conversations (updated, id)")
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'partial', 'cancelled', 'error')),
            model TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            ttft REAL,
            tokens_per_second REAL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            UNIQUE (conversation_id, position)
        )"""
    )


@migration
def m002_full_text_search(db: sqlite3.Connection) -> None:
    # Why unicode61 over CJK-split text rather than trigram, and why it is stored: localchat/store/text.py.
    db.execute("ALTER TABLE messages ADD COLUMN search_text TEXT NOT NULL DEFAULT ''")
    rows = db.execute("SELECT id, content FROM messages").fetchall()
    db.executemany("UPDATE messages SET search_text = ? WHERE id = ?",
                   [(text, i) for i, text in ((i, search_text(c)) for i, c in rows) if text])
    db.execute(f"CREATE VIEW messages_indexed (id, body) AS SELECT id, {_BODY.format(row='messages')} FROM messages")
    db.execute(
        """
        CREATE VIRTUAL TABLE messages_fts USING fts5 (
            body, content='messages_indexed', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
        )"""
    )
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    new, old = _BODY.format(row="new"), _BODY.format(row="old")
    db.execute(
        f"""
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, body) VALUES (new.id, {new});
        END"""
    )
    db.execute(
        f"""
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, {old});
        END"""
    )
    db.execute(
        f"""
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, search_text ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, {old});
            INSERT INTO messages_fts (rowid, body) VALUES (new.id, {new});
        END"""
    )


@migration
def m003_reasoning(db: sqlite3.Connection) -> None:
    """A reasoning model's thought, kept apart from the answer (issue 14), with its size and duration.

    The thought is not added to the search index: it is the model's scratch work, and searching it would bury
    the answers a user looks for under the musings that led to them. `history search` says so."""
    db.execute("ALTER TABLE messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE messages ADD COLUMN reasoning_tokens INTEGER")
    db.execute("ALTER TABLE messages ADD COLUMN thinking_seconds REAL")


# What the index reads for a row: the stored CJK-split form, else the content itself.
_BODY = "CASE WHEN {row}.search_text = '' THEN {row}.content ELSE {row}.search_text END"
