"""The conversation store: SQLite history that survives a kill -9, with full-text search (CJK included),
export and import. Knows nothing of Textual; the chat session writes through it.

    store = ConversationStore.open(paths.db_path)
    cid = store.create_conversation(model="qwen2.5-0.5b-instruct")
    store.add_message(cid, "user", "你好")
    with store.begin_reply(cid, model="qwen2.5-0.5b-instruct") as reply:
        for delta in stream:
            reply.append(delta)
        reply.finish("complete", usage)
"""

from localchat.store.database import ConversationStore
from localchat.store.records import (FINAL_STATUSES, ROLES, STATUSES, Conversation, ConversationSummary, SearchHit,
                                     StoredMessage)
from localchat.store.reply import FLUSH_INTERVAL, ReplyWriter
from localchat.store.schema import schema_version

__all__ = [
    "ConversationStore", "ReplyWriter", "Conversation", "ConversationSummary", "StoredMessage", "SearchHit",
    "ROLES", "STATUSES", "FINAL_STATUSES", "FLUSH_INTERVAL", "schema_version",
]
