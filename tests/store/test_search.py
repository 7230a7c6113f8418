"""Full-text search: Chinese (and Japanese, Korean) words of any length, English words, snippets."""

from __future__ import annotations

import sqlite3

import pytest

from localchat.store.text import match_expression, search_text, split_cjk

MESSAGES = [
    ("user", "这是关键词测试"),
    ("assistant", "你好！我可以帮你部署模型。"),
    ("user", "How do I deploy a llama.cpp server behind nginx?"),
    ("assistant", "Use a reverse proxy. Deployment needs TLS; the Café docs cover it."),
    ("user", "用GPT模型写代码，version gpt-4o"),
    ("assistant", "日本語のテキストも検索できます。한국어 모델을 지원합니다."),
]


@pytest.fixture
def filled(store):
    cid = store.create_conversation(model="m")
    ids = [store.add_message(cid, role, text) for role, text in MESSAGES]
    return store, cid, ids


def hits(store, query):
    return [(h.message_id, h.marked()) for h in store.search(query)]


def test_sqlite_tokenizers_behave_as_the_choice_assumes():
    """Why the index is unicode61 over CJK-split text (localchat/store/text.py): on this SQLite,
    unicode61 does not find a Chinese word inside a sentence and trigram does not find 2-character words."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE u USING fts5(t, tokenize='unicode61')")
    db.execute("CREATE VIRTUAL TABLE g USING fts5(t, tokenize='trigram')")
    for table in ("u", "g"):
        db.executemany(f"INSERT INTO {table} VALUES (?)", [("这是关键词测试",), ("你好世界",)])
    def count(table, q):
        return db.execute(f"SELECT count(*) FROM {table} WHERE {table} MATCH ?", (q,)).fetchone()[0]

    assert count("u", "关键词") == 0 and count("u", "你好") == 0  # a run of Han characters is one token
    assert count("g", "关键词") == 1 and count("g", "你好") == 0  # trigram needs 3+ characters


def test_chinese_words_inside_sentences(filled):
    store, cid, ids = filled
    assert hits(store, "关键词") == [(ids[0], "这是[关键词]测试")]
    assert hits(store, "你好") == [(ids[1], "[你好]！我可以帮你部署模型。")]  # two characters
    assert hits(store, "模型") == [(ids[4], "用GPT[模型]写代码，version gpt-4o"), (ids[1], "你好！我可以帮你部署[模型]。")]
    assert [m for m, _ in hits(store, "试")] == [ids[0]]  # one character
    assert hits(store, "关键字") == []  # the characters must be adjacent and in order
    assert hits(store, "这是关键词测试") == [(ids[0], "[这是关键词测试]")]


def test_english_words_prefixes_case_and_accents(filled):
    store, cid, ids = filled
    assert hits(store, "nginx") == [(ids[2], "How do I deploy a llama.cpp server behind [nginx]?")]
    assert [m for m, _ in hits(store, "DEPLOY")] == [ids[3], ids[2]]  # "Deployment" by prefix, any case
    assert [m for m, _ in hits(store, "cafe")] == [ids[3]]  # accents folded
    assert [m for m, _ in hits(store, "deploy nginx")] == [ids[2]]  # every word must occur
    assert hits(store, '"reverse proxy"') == [(ids[3], "Use a [reverse proxy]. Deployment needs TLS; the Café docs cover it.")]
    assert hits(store, '"proxy reverse"') == []
    assert [m for m, _ in hits(store, "gpt-4o")] == [ids[4]]
    assert [m for m, _ in hits(store, "GPT")] == [ids[4]]  # Latin next to Han is its own word


def test_japanese_and_korean(filled):
    store, cid, ids = filled
    assert [m for m, _ in hits(store, "テキスト")] == [ids[5]]
    assert [m for m, _ in hits(store, "모델")] == [ids[5]]  # a Korean word with a particle attached (모델을)


def test_query_syntax_is_never_parsed(filled):
    store, cid, ids = filled
    for query in ['AND', 'OR NOT', '"', '(', 'a*b', 'NEAR(x y)', '^start', "col:word", "'", "--", "x OR"]:
        store.search(query)  # no FTS5 syntax error reaches the caller
    assert store.search("!!! ...") == []


def test_snippets_are_one_line_and_highlight_the_hit(store):
    cid = store.create_conversation(model="m")
    long = ("intro " * 40) + "第一行\n\n中间有一个重要的关键词在这里\n" + ("outro " * 40)
    mid = store.add_message(cid, "assistant", long)
    (hit,) = store.search("关键词")
    assert hit.message_id == mid and hit.role == "assistant" and hit.conversation_id == cid
    assert "\n" not in hit.snippet and "\x1f" not in hit.snippet
    assert [hit.snippet[a:b] for a, b in hit.highlights] == ["关键词"]
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…") and len(hit.snippet) < 120
    assert hit.marked("<b>", "</b>").count("<b>关键词</b>") == 1


def test_results_are_newest_first_with_titles(store):
    a = store.create_conversation(model="m", title="older")
    store.add_message(a, "user", "python question")
    b = store.create_conversation(model="m", title="newer")
    store.add_message(b, "user", "another python question")
    assert [(h.conversation_id, h.title) for h in store.search("python")] == [(b, "newer"), (a, "older")]
    assert len(store.search("python", limit=1)) == 1


def test_streamed_reply_is_searchable_while_partial(store):
    cid = store.create_conversation(model="m")
    reply = store.begin_reply(cid, model="m", flush_interval=0)
    reply.append("正在生成的回答 streaming")
    assert [h.message_id for h in store.search("生成")] == [reply.message_id]
    reply.append(" finished")
    reply.finish("complete")
    assert [h.message_id for h in store.search("生成 finished")] == [reply.message_id]

    english = store.begin_reply(cid, model="m", flush_interval=0)  # no CJK: indexed from the content itself
    english.append("plain words")
    assert [h.message_id for h in store.search("plain")] == [english.message_id]
    english.append(" and more")
    english.finish("complete")
    assert [h.message_id for h in store.search("plain more")] == [english.message_id]


def test_index_stays_in_step_with_every_kind_of_write(store, db_path):
    cid = store.create_conversation(model="m")
    for text in ["english only", "中文内容", "mixed 混合 text"]:
        store.add_message(cid, "user", text)
        with store.begin_reply(cid, model="m", flush_interval=0) as r:
            for part in text.split():
                r.append(part + " ")
    store.delete_messages_from(cid, 3)
    other = store.create_conversation(model="m")
    store.add_message(other, "user", "to be deleted 删除")
    store.delete(other)
    store.import_json('[{"role": "user", "content": "imported 导入"}]')
    db = sqlite3.connect(db_path)
    db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")  # raises if not
    db.close()
    assert [h.role for h in store.search("中文")] == ["user"]
    assert store.search("删除") == [] and len(store.search("导入")) == 1


def test_index_helpers():
    assert search_text("plain english") == ""  # the index reads the content itself
    assert search_text("用GPT模型") == split_cjk("用GPT模型") == "\x1f用\x1fGPT\x1f模\x1f型\x1f"
    assert match_expression("关键词") == '"\x1f关\x1f键\x1f词\x1f"'
    assert match_expression('deploy "reverse proxy" ai') == '"deploy"* "reverse proxy" "ai"'
    assert match_expression('say "hi') == '"say"* "hi"'
    assert match_expression('a"b') == '"a""b"'
    assert match_expression("... !!") is None
