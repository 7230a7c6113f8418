"""Several processes on one database: a writer killed with SIGKILL mid-reply, two writers at once, locks."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from localchat.errors import StoreError
from localchat.store import FLUSH_INTERVAL, ConversationStore

# A chat turn that never ends: finished messages first, then a reply streaming until the process is killed.
# After each append it prints its own clock and the reply length so far.
STREAMING_CHILD = r"""
import sys, time
from localchat.store import ConversationStore

store = ConversationStore.open(sys.argv[1])
cid = store.create_conversation(model="tiny", system="Be brief.")
store.add_message(cid, "user", "first question 第一个问题")
with store.begin_reply(cid, model="tiny") as reply:
    reply.append("first answer ")
    reply.append("第一个回答")
    reply.finish("complete", {"completion_tokens": 2, "tokens_per_second": 50.0})
store.add_message(cid, "user", "second question")
reply = store.begin_reply(cid, model="tiny")
start = time.monotonic()
i = 0
while True:
    reply.append(f"tok{i} 字 ")
    i += 1
    print(f"{time.monotonic() - start:.6f} {len(reply.text)}", flush=True)
    time.sleep(0.002)
"""

# One of two processes writing at once: waits until both are ready, then chats as fast as it can.
WRITER_CHILD = r"""
import pathlib, sys, time
from localchat.store import ConversationStore

path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ready = pathlib.Path(path).parent
(ready / f"ready-{tag}").touch()
while len(list(ready.glob("ready-*"))) < 2:
    time.sleep(0.005)
store = ConversationStore.open(path)
other = "beta" if tag == "alpha" else "alpha"
for i in range(count):
    # Lockstep: never run more than one turn ahead of the other writer, so the two really overlap even
    # when the machine is busy enough to let one process finish before the other is scheduled.
    deadline = time.time() + 30
    while sum(c.model == other for c in store.list_conversations(limit=1000)) < i and time.time() < deadline:
        time.sleep(0.002)
    cid = store.create_conversation(model=tag)
    store.add_message(cid, "user", f"{tag} question {i} 问题")
    with store.begin_reply(cid, model=tag, flush_interval=0) as reply:
        for k in range(4):
            reply.append(f"{tag}-part{k} ")
    store.list_conversations(limit=5)
    store.search(tag)
store.close()
print("done", tag)
"""


def expected_stream(n: int) -> str:
    return "".join(f"tok{i} 字 " for i in range(n))


def test_sigkill_mid_reply_keeps_finished_messages_and_most_of_the_partial_one(db_path, python):
    child = subprocess.Popen([python, "-c", STREAMING_CHILD, str(db_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    progress = []  # (child clock, reply length)
    try:
        for line in child.stdout:
            t, n = line.split()
            progress.append((float(t), int(n)))
            if progress[-1][0] >= 4 * FLUSH_INTERVAL:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        stderr = child.stderr.read()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, stderr
    assert progress, f"the child wrote nothing: {stderr}"

    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with ConversationStore.open(db_path) as store:
        (summary,) = store.list_conversations()
        conv = store.conversation(summary.id)
        assert conv.system == "Be brief."
        done = [(m.role, m.content, m.status) for m in conv.messages[:3]]
        assert done == [("user", "first question 第一个问题", "complete"),
                        ("assistant", "first answer 第一个回答", "complete"),
                        ("user", "second question", "complete")]
        assert conv.messages[1].completion_tokens == 2
        partial = conv.messages[3]
        assert (partial.role, partial.status, partial.model) == ("assistant", "partial", "tiny")
        assert expected_stream(len(progress) + 10_000).startswith(partial.content)
        # The last write-through came at most one flush interval before the child's last append that we saw:
        # everything it had one interval (plus scheduling slack) earlier is on disk.
        last_seen = progress[-1][0]
        must_have = max((n for t, n in progress if t <= last_seen - FLUSH_INTERVAL - 0.1), default=0)
        assert must_have > 0 and len(partial.content) >= must_have
        assert [h.message_id for h in store.search("第一个")] == [m.id for m in conv.messages[:2]][::-1]
        # the partial reply stays flagged and the conversation goes on
        store.add_message(conv.id, "user", "are you there?")
        assert store.conversation(conv.id).messages[3].status == "partial"


def test_two_processes_writing_at_once(db_path, python):
    count = 100
    children = [subprocess.Popen([python, "-c", WRITER_CHILD, str(db_path), tag, str(count)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("alpha", "beta")]
    results = [c.communicate(timeout=300) for c in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0 and "locked" not in err, err
        assert out.startswith("done")

    with ConversationStore.open(db_path) as store:
        convs = store.list_conversations(limit=1000)
        assert len(convs) == 2 * count and all(c.message_count == 2 for c in convs)
        for c in convs:
            reply = store.conversation(c.id).messages[1]
            assert (reply.content, reply.status) == ("".join(f"{c.model}-part{k} " for k in range(4)), "complete")
        order = [c.model for c in sorted(convs, key=lambda c: c.id)]
        switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
        assert switches >= 2, "the two writers did not run at the same time"  # A, then B, then A again
        assert len(store.search("alpha", limit=500)) == 2 * count and len(store.search("问题", limit=500)) == 2 * count


def hold_write_lock(path, seconds: float, started: threading.Event) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    started.set()
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()


def test_a_writer_waits_for_a_lock_held_by_another_connection(store, db_path):
    started = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(db_path, 0.3, started))
    holder.start()
    started.wait()
    cid = store.create_conversation(model="m")  # waits instead of failing
    holder.join()
    assert store.conversation(cid).id == cid


def test_a_lock_held_too_long_gives_a_clear_error(db_path):
    with ConversationStore.open(db_path, timeout=0.2) as store:
        started = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(db_path, 1.0, started))
        holder.start()
        started.wait()
        try:
            with pytest.raises(StoreError, match="stayed locked") as info:
                store.create_conversation(model="m")
            assert "close other localchat windows" in str(info.value)
            assert store.list_conversations() == []  # reading goes on while another process writes (WAL)
        finally:
            holder.join()
        store.create_conversation(model="m")


def test_reading_never_waits_for_a_streaming_writer(store, other):
    cid = store.create_conversation(model="m")
    reply = store.begin_reply(cid, model="m", flush_interval=0)
    db = sqlite3.connect(other.path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")  # someone else is mid-write
    try:
        assert [c.id for c in other.list_conversations()] == [cid]
        assert other.search("anything") == []
    finally:
        db.execute("ROLLBACK")
        db.close()
    reply.append("ok")
    reply.finish("complete")
