"""Round trips through the store: conversations, messages, streamed replies, titles, listing, deletion."""

from __future__ import annotations

import threading

import pytest

from localchat.errors import Cancelled, ConversationNotFound, StoreError
from localchat.store import ConversationStore
from localchat.store.text import display_width, make_title
from localchat.types import Message, Usage


def test_conversation_round_trip(store):
    cid = store.create_conversation(model="qwen2.5-0.5b", system="You are terse.", settings={"temperature": 0.2})
    u = store.add_message(cid, "user", "What is 2+2? 请回答")
    reply = store.begin_reply(cid, model="qwen2.5-0.5b")
    for delta in ["It ", "is ", "4", "。"]:
        reply.append(delta)
    usage = Usage(prompt_tokens=12, completion_tokens=4, ttft=0.25, decode_seconds=0.5)
    reply.finish("complete", usage)

    conv = store.conversation(cid)
    assert (conv.id, conv.model, conv.system, conv.settings) == (cid, "qwen2.5-0.5b", "You are terse.", {"temperature": 0.2})
    assert conv.title == "What is 2+2? 请回答"
    user, answer = conv.messages
    assert (user.id, user.position, user.role, user.content, user.status) == (u, 0, "user", "What is 2+2? 请回答", "complete")
    assert (answer.id, answer.position, answer.role, answer.content) == (reply.message_id, 1, "assistant", "It is 4。")
    assert (answer.status, answer.model, answer.prompt_tokens, answer.completion_tokens) == ("complete", "qwen2.5-0.5b", 12, 4)
    assert answer.ttft == pytest.approx(0.25) and answer.tokens_per_second == pytest.approx(6.0)  # (4 - 1) tokens after the first, in 0.5 s
    assert conv.created <= user.created <= answer.created <= conv.updated
    assert conv.chat_messages() == [Message("system", "You are terse."), Message("user", "What is 2+2? 请回答"),
                                    Message("assistant", "It is 4。")]


def test_reply_writes_through_at_the_flush_interval(store, other):
    cid = store.create_conversation(model="m")
    eager = store.begin_reply(cid, model="m", flush_interval=0)
    eager.append("hello ")
    eager.append("world")
    seen = other.conversation(cid).messages[0]
    assert (seen.content, seen.status) == ("hello world", "partial")  # visible to another connection mid-stream
    eager.finish("complete")

    lazy = store.begin_reply(cid, model="m", flush_interval=3600)
    lazy.append("buffered")
    assert other.conversation(cid).messages[1].content == ""  # nothing written before the interval
    lazy.flush()
    assert other.conversation(cid).messages[1].content == "buffered"
    lazy.append(" more")
    lazy.finish("cancelled")
    seen = other.conversation(cid).messages[1]
    assert (seen.content, seen.status) == ("buffered more", "cancelled")


def test_reply_as_context_manager_records_how_it_ended(store):
    cid = store.create_conversation(model="m")
    with store.begin_reply(cid, model="m") as r:
        r.append("done")
    with pytest.raises(Cancelled), store.begin_reply(cid, model="m") as r:
        r.append("stopped by the user")
        raise Cancelled("cancelled")
    with pytest.raises(RuntimeError), store.begin_reply(cid, model="m") as r:
        r.append("half")
        raise RuntimeError("worker crashed")
    statuses = [(m.content, m.status) for m in store.conversation(cid).messages]
    assert statuses == [("done", "complete"), ("stopped by the user", "cancelled"), ("half", "error")]
    with pytest.raises(StoreError, match="already finished"):
        r.append("late")
    with pytest.raises(ValueError):
        store.begin_reply(cid, model="m").finish("partial")


def test_titles_come_from_the_first_user_message(store):
    long_en = "How do I   deploy\na llama.cpp server behind nginx with TLS, basic auth and a systemd unit that restarts it?"
    cid = store.create_conversation(model="m")
    store.add_message(cid, "assistant", "Hello! Ask me anything.")  # not a user message: no title from it
    assert store.conversation(cid).title == ""
    store.add_message(cid, "user", long_en)
    store.add_message(cid, "user", "a later message does not retitle")
    title = store.conversation(cid).title
    assert "\n" not in title and title.endswith("…") and display_width(title) <= 60
    assert title.startswith("How do I deploy a llama.cpp server") and not title[:-1].endswith(" ")
    assert long_en.split()[0:3] == title.split()[0:3]

    cjk = "请帮我写一个程序，读取一个很大的日志文件，统计每个小时出现的错误数量，并画出柱状图，最后保存成图片文件"
    assert display_width(make_title(cjk)) <= 60 and make_title(cjk).endswith("…")
    assert make_title(cjk)[:-1] == cjk[: len(make_title(cjk)) - 1]
    assert make_title("  short\n\tquestion  ") == "short question"

    named = store.create_conversation(model="m", title="Trip plan")
    store.add_message(named, "user", "Where should we go?")
    assert store.conversation(named).title == "Trip plan"


def test_rename(store):
    cid = store.create_conversation(model="m")
    store.add_message(cid, "user", "hello")
    store.rename(cid, "  Weekend\nplans ")
    assert store.conversation(cid).title == "Weekend plans"
    with pytest.raises(StoreError, match="cannot be empty"):
        store.rename(cid, " \n ")
    assert store.conversation(cid).title == "Weekend plans"


def test_list_is_newest_activity_first(store):
    ids = []
    for i in range(5):
        cid = store.create_conversation(model=f"model-{i}")
        for k in range(i):
            store.add_message(cid, "user", f"message {k}")
        ids.append(cid)
    assert [c.id for c in store.list_conversations()] == ids[::-1]
    assert [c.message_count for c in store.list_conversations()] == [4, 3, 2, 1, 0]
    store.add_message(ids[1], "user", "back to an old conversation")
    listed = store.list_conversations(limit=2)
    assert [c.id for c in listed] == [ids[1], ids[4]]
    assert (listed[0].model, listed[0].message_count, listed[0].title) == ("model-1", 2, "message 0")
    assert [c.id for c in store.list_conversations(limit=2, offset=2)] == [ids[3], ids[2]]
    assert store.latest_conversation_id() == ids[1]
    assert store.count_conversations() == 5


def test_empty_store(store):
    assert store.list_conversations() == []
    assert store.latest_conversation_id() is None
    assert store.search("anything") == []


def test_delete_removes_messages_and_search_hits(store):
    keep = store.create_conversation(model="m")
    store.add_message(keep, "user", "keep this zebra")
    gone = store.create_conversation(model="m")
    store.add_message(gone, "user", "delete this zebra")
    store.begin_reply(gone, model="m").finish("complete")
    store.delete(gone)
    assert [c.id for c in store.list_conversations()] == [keep]
    assert [h.conversation_id for h in store.search("zebra")] == [keep]
    with pytest.raises(ConversationNotFound):
        store.conversation(gone)


def test_delete_removes_the_model_states_saved_for_the_conversation_only(store):
    keep, gone = store.create_conversation(model="m"), store.create_conversation(model="m")
    paths = [store.checkpoint_path(cid, model) for cid in (keep, gone) for model in ("qwen3:4b", "smollm2")]
    assert len(set(paths)) == 4 and all(p.parent == store.path.parent / "checkpoints" for p in paths)
    assert paths[0].name == f"conversation-{keep}-qwen3_4b.ckpt"
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        path.write_bytes(b"state")
    store.delete(gone)
    assert [p.exists() for p in paths] == [True, True, False, False]
    store.delete(keep)
    assert not any(p.exists() for p in paths)


def test_delete_messages_from_for_regenerate(store):
    cid = store.create_conversation(model="m")
    for role, text in [("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")]:
        store.add_message(cid, role, text)
    assert store.delete_messages_from(cid, 3) == 1  # regenerate the last reply
    reply = store.begin_reply(cid, model="m2")
    reply.append("a2 again")
    reply.finish("complete")
    assert store.delete_messages_from(cid, 2) == 2  # edit and resend the last question
    store.add_message(cid, "user", "q2 edited")
    conv = store.conversation(cid)
    assert [(m.position, m.content) for m in conv.messages] == [(0, "q1"), (1, "a1"), (2, "q2 edited")]
    assert store.search("again") == []


def test_unknown_ids_raise_conversation_not_found(store):
    calls = [
        lambda: store.conversation(42), lambda: store.add_message(42, "user", "x"),
        lambda: store.begin_reply(42, model="m"), lambda: store.rename(42, "t"), lambda: store.delete(42),
        lambda: store.delete_messages_from(42, 0), lambda: store.export(42, "md"),
        lambda: store.update_conversation(42, model="m"),
    ]
    for call in calls:
        with pytest.raises(ConversationNotFound, match="no conversation 42"):
            call()


def test_reply_to_a_deleted_conversation_fails_clearly(store, other):
    cid = store.create_conversation(model="m")
    reply = store.begin_reply(cid, model="m", flush_interval=0)
    other.delete(cid)
    with pytest.raises(ConversationNotFound, match="no longer exists"):
        reply.append("text")


def test_bad_arguments(store):
    cid = store.create_conversation(model="m")
    with pytest.raises(ValueError, match="role"):
        store.add_message(cid, "tool", "x")
    with pytest.raises(ValueError, match="status"):
        store.add_message(cid, "user", "x", status="done")
    with pytest.raises(StoreError, match="empty"):
        store.search("   ")


def test_update_conversation(store):
    cid = store.create_conversation(model="small", system="old", settings={"a": 1})
    store.update_conversation(cid, model="large")
    conv = store.conversation(cid)
    assert (conv.model, conv.system, conv.settings) == ("large", "old", {"a": 1})
    store.update_conversation(cid, system="", settings={"temperature": 0})
    conv = store.conversation(cid)
    assert (conv.model, conv.system, conv.settings) == ("large", None, {"temperature": 0})


def test_closed_store_says_so(db_path):
    s = ConversationStore.open(db_path)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        s.list_conversations()


def test_threads_share_one_store(store):
    errors = []

    def chat(n):
        try:
            for i in range(10):
                cid = store.create_conversation(model=f"t{n}")
                store.add_message(cid, "user", f"thread {n} question {i}")
                with store.begin_reply(cid, model=f"t{n}", flush_interval=0) as r:
                    for k in range(5):
                        r.append(f"part{k} ")
                store.search(f"thread {n}")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    convs = store.list_conversations(limit=100)
    assert len(convs) == 40 and all(c.message_count == 2 for c in convs)
    texts = {store.conversation(c.id).messages[1].content for c in convs}
    assert texts == {"part0 part1 part2 part3 part4 "}
