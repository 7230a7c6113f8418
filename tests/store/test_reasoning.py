"""A reasoning model's thought is stored apart from its answer (migration m003), streamed, exported and
imported with it, and left out of search."""

from __future__ import annotations

import json
import sqlite3

from localchat.store import ConversationStore
from localchat.store.schema import MIGRATIONS

THOUGHT = "The user greets me. 先想一想 quietly."
ANSWER = "Hello there!"


def _reply(store, cid):
    store.add_message(cid, "user", "hi")
    with store.begin_reply(cid, model="qwen3-4b", flush_interval=0) as reply:
        reply.append_reasoning(THOUGHT[:10])
        reply.append_reasoning(THOUGHT[10:])
        reply.append(ANSWER)
        reply.finish("complete", usage={"completion_tokens": 30, "reasoning_tokens": 24, "thinking_seconds": 12.4})
    return reply.message_id


def test_an_old_database_gains_the_column_and_keeps_its_messages(db_path):
    db = sqlite3.connect(db_path, isolation_level=None)
    for number, step in enumerate(MIGRATIONS[:2], start=1):
        step(db)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute("INSERT INTO conversations (title, settings, created, updated) VALUES ('old', '{}', 1, 1)")
    db.execute("INSERT INTO messages (conversation_id, position, role, content, created, updated) "
               "VALUES (1, 0, 'assistant', 'an old answer', 1, 1)")
    db.close()
    with ConversationStore.open(db_path) as store:
        old = store.conversation(1).messages[0]
        assert (old.content, old.reasoning, old.reasoning_tokens) == ("an old answer", "", None)
        _reply(store, 1)
        assert store.conversation(1).messages[-1].reasoning == THOUGHT


def test_the_thought_streams_to_disk_apart_from_the_answer(store):
    cid = store.create_conversation(model="qwen3-4b")
    store.add_message(cid, "user", "hi")
    reply = store.begin_reply(cid, model="qwen3-4b", flush_interval=0)
    reply.append_reasoning(THOUGHT)  # a kill -9 now still leaves the thought on disk
    partial = store.conversation(cid).messages[-1]
    assert (partial.status, partial.reasoning, partial.content) == ("partial", THOUGHT, "")
    reply.append(ANSWER)
    reply.finish("complete", usage={"reasoning_tokens": 24, "thinking_seconds": 12.4})
    done = store.conversation(cid).messages[-1]
    assert (done.reasoning, done.content, done.reasoning_tokens, done.thinking_seconds) == (THOUGHT, ANSWER, 24, 12.4)
    message = store.conversation(cid).chat_messages()[-1]
    assert (message.content, message.reasoning) == (ANSWER, THOUGHT)
    assert message.to_dict() == {"role": "assistant", "content": ANSWER, "reasoning_content": THOUGHT}


def test_search_finds_answers_not_thoughts(store):
    cid = store.create_conversation(model="qwen3-4b")
    _reply(store, cid)
    assert [h.role for h in store.search("Hello")] == ["assistant"]
    assert store.search("quietly") == []
    assert store.search("先想") == []


def test_exports_say_whether_they_include_the_thought(store):
    cid = store.create_conversation(model="qwen3-4b")
    _reply(store, cid)
    md = store.export(cid, "md")
    assert "<details><summary>Thought for 12 s · 24 tokens</summary>" in md and THOUGHT in md
    assert md.index(THOUGHT) < md.index(ANSWER)
    assert THOUGHT not in store.export(cid, "md", thinking=False)

    doc = json.loads(store.export(cid, "json"))
    assert all("reasoning_content" not in m for m in doc["messages"]), "the top level stays an OpenAI request body"
    assert doc["localchat"]["messages"][-1]["reasoning"] == THOUGHT
    assert doc["localchat"]["messages"][-1]["reasoning_tokens"] == 24
    assert "reasoning" not in json.loads(store.export(cid, "json", thinking=False))["localchat"]["messages"][-1]


def test_import_keeps_the_thought_from_our_export_and_from_other_tools(store):
    cid = store.create_conversation(model="qwen3-4b")
    _reply(store, cid)
    again = store.conversation(store.import_json(store.export(cid, "json"))).messages[-1]
    assert (again.reasoning, again.content, again.thinking_seconds) == (THOUGHT, ANSWER, 12.4)

    bare = [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": "A", "reasoning_content": "vLLM's thought"},
            {"role": "user", "content": "and?"},
            {"role": "assistant", "content": "B", "reasoning": "OpenRouter's thought"}]
    imported = store.conversation(store.import_json(json.dumps(bare))).messages
    assert [m.reasoning for m in imported] == ["", "vLLM's thought", "", "OpenRouter's thought"]
