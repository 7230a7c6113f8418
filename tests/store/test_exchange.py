"""Export (Markdown, JSON in the OpenAI messages format) and import with validation."""

from __future__ import annotations

import json

import pytest

from localchat.errors import ConversationFormatError, StoreError


@pytest.fixture
def chat(store):
    cid = store.create_conversation(model="qwen2.5-0.5b", system="Answer in Chinese.", settings={"temperature": 0.3})
    store.add_message(cid, "user", "What is *Markdown*?\nExplain briefly.")
    with store.begin_reply(cid, model="qwen2.5-0.5b") as r:
        r.append("Markdown 是一种轻量级标记语言。")
        r.finish("complete", {"prompt_tokens": 30, "completion_tokens": 12, "ttft": 0.05, "tokens_per_second": 88.5})
    store.add_message(cid, "user", "And HTML?")
    with store.begin_reply(cid, model="smollm2-135m") as r:
        r.append("HTML is")
        r.finish("cancelled")
    return cid


def test_json_export_is_an_openai_request_body(store, chat):
    doc = json.loads(store.export(chat, "json"))
    assert doc["model"] == "qwen2.5-0.5b"
    assert doc["messages"] == [
        {"role": "system", "content": "Answer in Chinese."},
        {"role": "user", "content": "What is *Markdown*?\nExplain briefly."},
        {"role": "assistant", "content": "Markdown 是一种轻量级标记语言。"},
        {"role": "user", "content": "And HTML?"},
        {"role": "assistant", "content": "HTML is"},
    ]
    ours = doc["localchat"]
    assert ours["title"] == "What is *Markdown*? Explain briefly." and ours["settings"] == {"temperature": 0.3}
    assert len(ours["messages"]) == len(doc["messages"]) and ours["messages"][0] == {"system_prompt": True}
    meta = ours["messages"][2]
    assert (meta["status"], meta["model"], meta["completion_tokens"], meta["tokens_per_second"]) == (
        "complete", "qwen2.5-0.5b", 12, 88.5)
    assert ours["messages"][4]["status"] == "cancelled"


def test_json_round_trip(store, chat):
    original = store.conversation(chat)
    copy = store.conversation(store.import_json(store.export(chat, "json")))
    assert copy.id != original.id
    assert (copy.title, copy.model, copy.system, copy.settings) == (
        original.title, original.model, original.system, original.settings)

    def fields(m):
        return (m.position, m.role, m.content, m.status, m.model, m.prompt_tokens, m.completion_tokens, m.ttft,
                m.tokens_per_second)

    assert [fields(m) for m in copy.messages] == [fields(m) for m in original.messages]
    for a, b in zip(copy.messages, original.messages):
        assert a.created == pytest.approx(b.created, abs=0.001)  # exported with millisecond precision
    assert copy.created == pytest.approx(original.created, abs=0.001)
    assert {h.conversation_id for h in store.search("轻量级")} == {chat, copy.id}
    assert store.export(copy.id, "json").replace(f'"id": {copy.id}', "") == \
        store.export(chat, "json").replace(f'"id": {chat}', "")


def test_markdown_export_reads_like_a_transcript(store, chat):
    md = store.export(chat, "md")
    assert md.startswith("# What is *Markdown*? Explain briefly.\n")
    assert "## System prompt\n\nAnswer in Chinese." in md
    assert "## User\n\nWhat is *Markdown*?\nExplain briefly." in md
    assert "## Assistant (qwen2.5-0.5b, 12 tokens, 88.5 tokens/s, first token after 0.05 s)\n\nMarkdown 是一种" in md
    assert "## Assistant (smollm2-135m, cancelled)\n\nHTML is" in md
    assert md.index("## User") < md.index("## Assistant") < md.index("And HTML?")


def test_export_rejects_unknown_format(store, chat):
    with pytest.raises(StoreError, match="unknown export format 'html'"):
        store.export(chat, "html")


def test_plain_openai_body_and_bare_list(store):
    body = {"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
        {"role": "developer", "content": "Be kind."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hi!", "refusal": None},
    ]}
    conv = store.conversation(store.import_json(json.dumps(body)))
    assert (conv.model, conv.system, conv.title) == ("gpt-4o-mini", "Be kind.", "Hello there")
    assert [(m.role, m.content, m.status) for m in conv.messages] == [("user", "Hello there", "complete"),
                                                                      ("assistant", "Hi!", "complete")]
    bare = [{"role": "user", "content": "第一条"}, {"role": "assistant", "content": "好"}]
    conv = store.conversation(store.import_json(json.dumps(bare, ensure_ascii=False)))
    assert (conv.model, conv.system, conv.title, len(conv.messages)) == (None, None, "第一条", 2)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"not valid JSON \(line 1, column 2"),
    ('{"model": "x"}', 'no "messages" list'),
    ('"hello"', '"messages" must be a list'),
    ('{"messages": {"role": "user"}}', '"messages" must be a list'),
    ("[]", "no user or assistant messages"),
    ('[{"role": "system", "content": "only a prompt"}]', "no user or assistant messages"),
    ('[{"role": "user", "content": "hi"}, "oops"]', "message 2 is not an object"),
    ('[{"role": "tool", "content": "42"}]', "message 1 has role 'tool'"),
    ('[{"content": "hi"}]', "message 1 has role None"),
    ('[{"role": "assistant", "content": null, "tool_calls": []}]', r"message 1 \(assistant\) has no text"),
    ('[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]', "message 1 has a image_url part"),
])
def test_import_explains_what_is_wrong(store, text, message):
    with pytest.raises(ConversationFormatError, match=message):
        store.import_json(text)
    assert store.list_conversations() == []  # nothing half-imported
