"""ConversationStore: conversations and messages in SQLite (standard library sqlite3), shared safely by the
TUI, the CLI and the server, in one process or several.

- WAL journal: readers never block the writer and the writer never blocks readers; synchronous=FULL makes
  each commit durable against a power cut too (a commit costs one fsync; replies commit twice a second).
- Every write is a short `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so two processes
  never deadlock upgrading a read lock; SQLITE_BUSY waits (busy timeout) and is retried until `timeout`.
- One connection per store, used from any thread under a lock (check_same_thread=False).
- Opening never writes to a file it cannot vouch for: a non-SQLite or damaged file, someone else's SQLite
  database, or one from a newer localchat gives a StoreError and the file is left as it was.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from localchat.errors import ConversationNotFound, DiskFullError, StoreError
from localchat.store import exchange
from localchat.store.records import (METRICS, ROLES, STATUSES, Conversation, ConversationSummary, SearchHit,
                                     StoredMessage, metrics_from)
from localchat.store.reply import FLUSH_INTERVAL, ReplyWriter
from localchat.store.schema import MIGRATIONS, schema_version
from localchat.store.text import (HIT_CLOSE, HIT_OPEN, make_title, match_expression, one_line, parse_snippet,
                                  search_text)

T = TypeVar("T")
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT = 5.0  # seconds SQLite itself waits for a lock before each retry of ours
DEFAULT_TIMEOUT = 30.0  # seconds before a locked database is reported
SNIPPET_TOKENS = 24  # words (or CJK characters) around a search hit
_UNSET: Any = object()
_METRIC_COLUMNS = ", ".join(METRICS)
_MESSAGE_COLUMNS = ("id, conversation_id, position, role, content, status, model, prompt_tokens, "
                    "completion_tokens, ttft, tokens_per_second, created, updated, reasoning, reasoning_tokens, "
                    "thinking_seconds")  # in StoredMessage's field order
_INSERT_MESSAGE = (f"INSERT INTO messages (conversation_id, position, role, content, search_text, reasoning, status, "
                   f"model, {_METRIC_COLUMNS}, created, updated) VALUES ({', '.join('?' * (10 + len(METRICS)))})")
_RECOVER_HINT = "nothing was changed; move the file aside to start a new history, or try `sqlite3 FILE .recover`"


class ConversationStore:
    """The conversation database. Open with `ConversationStore.open(paths.db_path)`; close when done."""

    def __init__(self, path: Path, connection: sqlite3.Connection, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._db: sqlite3.Connection | None = connection
        self._lock = threading.RLock()

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> "ConversationStore":
        """Open (creating and migrating as needed) the database at `path`; StoreError if it cannot be used."""
        path = Path(path)
        _check_file(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(str(path), timeout=min(BUSY_TIMEOUT, timeout), isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the conversation database {path}: {exc}",
                             hint="check that the folder exists and is writable") from exc
        store = cls(path, connection, timeout)
        try:
            store._prepare()
        except BaseException:
            connection.close()
            raise
        return store

    def _prepare(self) -> None:
        version, objects = self._read(lambda db: (db.execute("PRAGMA user_version").fetchone()[0],
                                                  db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]))
        if version > schema_version():
            raise StoreError(f"{self.path} was written by a newer localchat (schema {version}; this version "
                             f"knows up to {schema_version()})", hint="upgrade localchat; the file was not changed")
        if version == 0 and objects:
            raise StoreError(f"{self.path} is a SQLite database, but not a localchat conversation database",
                             hint="move it aside or use another --home; the file was not changed")
        self._retrying(lambda db: db.execute("PRAGMA journal_mode = WAL").fetchone())
        self._retrying(lambda db: db.execute("PRAGMA synchronous = FULL"))
        self._retrying(lambda db: db.execute("PRAGMA foreign_keys = ON"))
        for number, step in enumerate(MIGRATIONS, start=1):
            if number > version:
                self._write(lambda db, n=number, fn=step: _migrate(db, n, fn))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "ConversationStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ConversationStore {self.path}{' closed' if self._db is None else ''}>"

    # --- conversations ----------------------------------------------------------------------------

    def create_conversation(self, *, model: str | None, system: str | None = None, title: str | None = None,
                            settings: dict | None = None) -> int:
        now = time.time()
        values = (one_line(title or ""), model, system or None, _settings_json(settings), now, now)
        return self._write(lambda db: db.execute(
            "INSERT INTO conversations (title, model, system, settings, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
            values).lastrowid)

    def update_conversation(self, conversation_id: int, *, model: str | None = _UNSET, system: str | None = _UNSET,
                            settings: dict | None = _UNSET) -> None:
        """Change what a conversation continues with (e.g. the model after a swap); unnamed fields stay."""
        changes = {k: v for k, v in (("model", model), ("system", system or None)) if v is not _UNSET}
        if settings is not _UNSET:
            changes["settings"] = _settings_json(settings)
        if not changes:
            return
        sql = f"UPDATE conversations SET {', '.join(f'{k} = ?' for k in changes)}, updated = ? WHERE id = ?"
        self._write(lambda db: _expect_row(db.execute(sql, (*changes.values(), time.time(), conversation_id)),
                                           conversation_id))

    def rename(self, conversation_id: int, title: str) -> None:
        title = one_line(title)
        if not title:
            raise StoreError("a conversation title cannot be empty", hint="give some text, e.g. `rename 3 \"Trip plan\"`")
        self._write(lambda db: _expect_row(db.execute("UPDATE conversations SET title = ? WHERE id = ?",
                                                      (title, conversation_id)), conversation_id))

    def delete(self, conversation_id: int) -> None:
        """The conversation, its messages, and the model state saved for it (checkpoint_path)."""
        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            _expect_row(db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)), conversation_id)
        self._write(write)
        for path in self.checkpoint_dir.glob(f"conversation-{conversation_id}-*.ckpt"):
            path.unlink(missing_ok=True)

    @property
    def checkpoint_dir(self) -> Path:
        """Next to the database: the model states of conversations (checkpoint_path)."""
        return Path(self.path).parent / "checkpoints"

    def checkpoint_path(self, conversation_id: int, model_id: str) -> Path:
        """Where a model's state of a conversation is saved when the conversation is left, the model swapped
        or the app closed (localchat.chat.ChatSession.park): one file per conversation and model, so a swap
        back to a model finds its own."""
        return self.checkpoint_dir / f"conversation-{conversation_id}-{re.sub(r'[^A-Za-z0-9._-]', '_', model_id)}.ckpt"

    def conversation(self, conversation_id: int) -> Conversation:
        def read(db: sqlite3.Connection) -> Conversation:
            row = db.execute("SELECT id, title, model, system, settings, created, updated FROM conversations "
                             "WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise _not_found(conversation_id)
            messages = db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
                                  "ORDER BY position", (conversation_id,)).fetchall()
            cid, title, model, system, settings, created, updated = row
            return Conversation(cid, title, model, system, _settings_dict(settings), created, updated,
                                [StoredMessage(*m) for m in messages])
        return self._read(read)

    def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationSummary]:
        """Newest activity first."""
        rows = self._read(lambda db: db.execute(
            "SELECT c.id, c.title, c.model, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id), "
            "c.created, c.updated FROM conversations c ORDER BY c.updated DESC, c.id DESC LIMIT ? OFFSET ?",
            (limit, offset)).fetchall())
        return [ConversationSummary(*r) for r in rows]

    def count_conversations(self) -> int:
        return self._read(lambda db: db.execute("SELECT count(*) FROM conversations").fetchone()[0])

    def latest_conversation_id(self) -> int | None:
        """The conversation with the most recent activity (what `run --continue` picks), or None."""
        row = self._read(lambda db: db.execute(
            "SELECT id FROM conversations ORDER BY updated DESC, id DESC LIMIT 1").fetchone())
        return row[0] if row else None

    # --- messages ---------------------------------------------------------------------------------

    def add_message(self, conversation_id: int, role: str, content: str, *, status: str = "complete",
                    model: str | None = None, usage: Any = None, reasoning: str = "") -> int:
        """Append a message; the first user message gives an untitled conversation its title."""
        _check_role(role)
        if status not in STATUSES:
            raise ValueError(f"message status must be one of {', '.join(STATUSES)}, not {status!r}")
        metrics = metrics_from(usage)
        now = time.time()

        def write(db: sqlite3.Connection) -> int:
            title = make_title(content) if role == "user" else ""
            _expect_row(db.execute("UPDATE conversations SET updated = ?, title = CASE WHEN title = '' THEN ? "
                                   "ELSE title END WHERE id = ?", (now, title, conversation_id)), conversation_id)
            position = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id = ?",
                                  (conversation_id,)).fetchone()[0]
            return db.execute(_INSERT_MESSAGE, (conversation_id, position, role, content, search_text(content),
                                                reasoning, status, model, *(metrics.get(k) for k in METRICS), now,
                                                now)).lastrowid
        return self._write(write)

    def begin_reply(self, conversation_id: int, *, model: str, flush_interval: float = FLUSH_INTERVAL) -> ReplyWriter:
        """Start an assistant message (status 'partial') that streams in through the returned writer."""
        message_id = self.add_message(conversation_id, "assistant", "", status="partial", model=model)
        return ReplyWriter(self, conversation_id, message_id, flush_interval)

    def delete_messages_from(self, conversation_id: int, position: int) -> int:
        """Delete the message at `position` and every later one (regenerate, edit and resend); returns how many."""
        def write(db: sqlite3.Connection) -> int:
            _expect_row(db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation_id)),
                        conversation_id)
            return db.execute("DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                              (conversation_id, position)).rowcount
        return self._write(write)

    def _write_reply(self, message_id: int, text: str, status: str | None = None, usage: Any = None,
                     reasoning: str = "") -> None:
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            if status is None:
                cur = db.execute("UPDATE messages SET content = ?, search_text = ?, reasoning = ?, updated = ? "
                                 "WHERE id = ?", (text, search_text(text), reasoning, now, message_id))
            else:
                metrics = metrics_from(usage)
                cur = db.execute(
                    "UPDATE messages SET content = ?, search_text = ?, reasoning = ?, status = ?, "
                    f"{', '.join(f'{k} = ?' for k in METRICS)}, updated = ? WHERE id = ?",
                    (text, search_text(text), reasoning, status, *(metrics.get(k) for k in METRICS), now, message_id))
            if cur.rowcount == 0:
                raise ConversationNotFound(f"message {message_id} no longer exists",
                                           hint="its conversation was deleted while the reply was being written")
            db.execute("UPDATE conversations SET updated = ? WHERE id = "
                       "(SELECT conversation_id FROM messages WHERE id = ?)", (now, message_id))
        self._write(write)

    # --- search -----------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages matching every word of `query` (CJK text matched anywhere), most recent first. Answers only:
        reasoning models' thoughts are not indexed (schema m003 says why)."""
        if not query.strip():
            raise StoreError("the search query is empty", hint='give a word to look for, e.g. "关键词" or "python"')
        expression = match_expression(query)
        if expression is None:  # only punctuation: nothing the index can hold
            return []
        rows = self._read(lambda db: db.execute(
            "SELECT m.conversation_id, c.title, m.id, m.role, "
            f"snippet(messages_fts, 0, '{HIT_OPEN}', '{HIT_CLOSE}', '…', {SNIPPET_TOKENS}) "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "JOIN conversations c ON c.id = m.conversation_id "
            "WHERE messages_fts MATCH ? ORDER BY messages_fts.rowid DESC LIMIT ?", (expression, limit)).fetchall())
        return [SearchHit(cid, title, mid, role, *parse_snippet(snippet)) for cid, title, mid, role, snippet in rows]

    # --- export and import ------------------------------------------------------------------------

    def export(self, conversation_id: int, fmt: str = "md", thinking: bool = True) -> str:
        """The conversation as Markdown ("md", for people) or JSON ("json", OpenAI messages plus our metadata);
        `thinking`: whether reasoning models' thoughts are included."""
        if fmt not in exchange.FORMATS:
            raise StoreError(f"unknown export format {fmt!r}", hint=f"use one of: {', '.join(exchange.FORMATS)}")
        conv = self.conversation(conversation_id)
        return exchange.to_markdown(conv, thinking) if fmt == "md" else exchange.to_json(conv, thinking)

    def import_json(self, text: str) -> int:
        """Add a conversation from JSON (our export, an OpenAI request body, or a bare list of messages)."""
        conv = exchange.parse_import(text)
        now = time.time()

        def write(db: sqlite3.Connection) -> int:
            title = conv.title or next((make_title(m.content) for m in conv.messages if m.role == "user"), "")
            created = conv.created or now
            cid = db.execute(
                "INSERT INTO conversations (title, model, system, settings, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (title, conv.model, conv.system, _settings_json(conv.settings), created,
                 conv.updated or max(created, now))).lastrowid
            db.executemany(_INSERT_MESSAGE, [
                (cid, i, m.role, m.content, search_text(m.content), m.reasoning, m.status, m.model,
                 *(getattr(m, k) for k in METRICS), m.created or created, m.created or created)
                for i, m in enumerate(conv.messages)])
            return cid
        return self._write(write)

    # --- transactions -----------------------------------------------------------------------------

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction(fn, "BEGIN")

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction(fn, "BEGIN IMMEDIATE")

    def _retrying(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction(fn, None)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], begin: str | None) -> T:
        """Run `fn` in one transaction, again from the start while the database is busy (up to `timeout`)."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError("the conversation store is closed")
            while True:
                try:
                    if begin is None:
                        return fn(db)
                    db.execute(begin)
                    try:
                        result = fn(db)
                        db.execute("COMMIT")
                        return result
                    except BaseException:
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
                except sqlite3.OperationalError as exc:
                    if _is_busy(exc) and time.monotonic() < deadline:
                        time.sleep(delay)
                        delay = min(delay * 2, 0.1)
                        continue
                    raise self._error(exc) from exc
                except sqlite3.DatabaseError as exc:
                    raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if _is_busy(exc):
            return StoreError(f"the conversation database {self.path} stayed locked for {self.timeout:g} s ({text})",
                              hint="another program holds it; close other localchat windows and try again")
        if "full" in text:
            return DiskFullError(f"no space left to write {self.path}", hint="free some disk space and try again")
        if "readonly" in text or "read-only" in text:
            return StoreError(f"the conversation database {self.path} is read-only",
                              hint="check the permissions of the file and its folder")
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError)):
            return StoreError(f"the conversation database refused a write: {text}")
        return StoreError(f"the conversation database {self.path} cannot be read: {text}", hint=_RECOVER_HINT)


def _migrate(db: sqlite3.Connection, number: int, step: Callable[[sqlite3.Connection], None]) -> None:
    if db.execute("PRAGMA user_version").fetchone()[0] >= number:
        return  # another process applied it while we waited for the write lock
    step(db)
    db.execute(f"PRAGMA user_version = {number:d}")


def _check_file(path: Path) -> None:
    """Refuse a path that is not a SQLite file before SQLite can write anything to it."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a conversation database",
                         hint="move it away (localchat then starts a new database there) or use another --home")
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read the conversation database {path}: {exc.strerror}",
                         hint="check the permissions of the file and its folder") from exc
    if header and header != SQLITE_HEADER:
        raise StoreError(f"{path} is not a SQLite database (damaged or overwritten)", hint=_RECOVER_HINT)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED and their extended codes
    text = str(exc)
    return "locked" in text or "busy" in text


def _expect_row(cursor: sqlite3.Cursor, conversation_id: int) -> None:
    if cursor.rowcount == 0:
        raise _not_found(conversation_id)


def _not_found(conversation_id: int) -> ConversationNotFound:
    return ConversationNotFound(f"there is no conversation {conversation_id}", hint="`localchat history` lists them")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"message role must be one of {', '.join(ROLES)}, not {role!r}")


def _settings_json(settings: dict | None) -> str:
    if settings is None:
        return "{}"
    if not isinstance(settings, dict):
        raise ValueError("conversation settings must be a dict")
    return json.dumps(settings, ensure_ascii=False, sort_keys=True)


def _settings_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}  # edited by hand into something unreadable: the conversation itself is still shown
    return value if isinstance(value, dict) else {}
