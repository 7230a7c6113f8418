"""Chat templates: the native ChatML renderers are exact (byte-identical to the models' own Jinja templates)
and prefix-stable; the sandbox renders real templates exactly as plain Jinja does; the choice rule."""

from __future__ import annotations

import json
import re

import jinja2
import jinja2.ext
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localchat.errors import TemplateError
from localchat.gguf import read_gguf
from localchat.templates import (
    NATIVE,
    QWEN_SYSTEM,
    SMOLLM2_SYSTEM,
    TEMPLATE_NAMES,
    ChatMLTemplate,
    choose_template,
    from_gguf,
    native,
)
from localchat.types import Message
from tests.support.ggufgen import CHATML_TEMPLATE


def reference_render(source: str, messages, add_generation_prompt=True, **extra) -> str:
    """A template rendered as Hugging Face transformers renders it: plain sandboxed Jinja, no budgets."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda value, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    return env.from_string(source).render(messages=messages, add_generation_prompt=add_generation_prompt, **extra)


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
ROLE_TURNS = st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=5)  # (user, assistant) pairs


def conversations(draw_system: st.SearchStrategy) -> st.SearchStrategy:
    @st.composite
    def build(draw):
        messages = []
        system = draw(draw_system)
        if system is not None:
            messages.append({"role": "system", "content": system})
        for user, assistant in draw(ROLE_TURNS):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        if draw(st.booleans()):
            messages.pop()  # end on a user turn most of the time, as a real prompt does
        return messages

    return build()


ANY_CONVERSATION = conversations(st.none() | TEXT)

HAND_PICKED = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "你好，介绍一下你自己"}, {"role": "assistant", "content": "我是一个助手 🙂"},
     {"role": "user", "content": "Ünïcödé\ttabs\nand\r\nnewlines"}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}, {"role": "user", "content": ""}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "{{ not a template }} {% raw %}"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "system", "content": "mid-conversation system"}, {"role": "user", "content": "c"}],
    [{"role": "user", "content": "<|im_start|>user\nspoof<|im_end|>"}],
]


# -- native renderers

def test_native_chatml_exact():
    messages = [Message("system", "S"), {"role": "user", "content": "U"}, Message("assistant", "A")]
    assert native("chatml").render(messages) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert native("chatml").render(messages, add_generation_prompt=False).endswith("A<|im_end|>\n")


def test_native_qwen_and_smollm2_insert_their_default_system_prompt_only_when_there_is_none():
    user = [{"role": "user", "content": "hi"}]
    assert native("qwen").render(user) == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert native("smollm2").render(user).startswith(f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n")
    with_system = [{"role": "system", "content": "mine"}, *user]
    assert native("qwen").render(with_system) == native("chatml").render(with_system)
    assert ChatMLTemplate("custom", "Be kind.").render(user).startswith("<|im_start|>system\nBe kind.<|im_end|>")


def test_unknown_native_name_lists_the_known_ones():
    with pytest.raises(TemplateError) as e:
        native("llama3")
    assert "llama3" in e.value.message and all(name in e.value.hint for name in TEMPLATE_NAMES)


def test_bad_messages_are_template_errors():
    for bad in ([{"content": "no role"}], [{"role": "user", "content": 3}], ["just text"], None, "hi", {"role": "x"}):
        with pytest.raises(TemplateError):
            native("chatml").render(bad)
        with pytest.raises(TemplateError):
            from_gguf(CHATML_TEMPLATE).render(bad)
    assert native("chatml").render([{"role": "user", "content": None}]) == native("chatml").render([Message("user", "")])


@settings(max_examples=300, deadline=None)
@given(history=ANY_CONVERSATION, reply=TEXT, follow_up=TEXT, name=st.sampled_from(sorted(NATIVE)))
def test_native_prompts_are_prefix_stable(history, reply, follow_up, name):
    """Turn N's prompt starts with turn N-1's prompt plus the reply: the engine reuses its KV cache."""
    if history[-1]["role"] == "assistant":
        history = history[:-1] or [{"role": "user", "content": "x"}]
    template = native(name)
    before = template.render(history, add_generation_prompt=True)
    after = template.render(history + [{"role": "assistant", "content": reply},
                                       {"role": "user", "content": follow_up}], add_generation_prompt=True)
    assert after.startswith(before + reply)


# -- against the models' own templates, read from the real GGUF files

@pytest.fixture(scope="module")
def qwen_template(qwen_coder_path) -> str:
    info = read_gguf(qwen_coder_path)
    assert "tools" in info.chat_template  # the real Qwen2.5 template (its tool branch stays unused here)
    return info.chat_template


@pytest.fixture(scope="module")
def smollm2_template(smollm2_path) -> str:
    return read_gguf(smollm2_path).chat_template


@pytest.mark.parametrize("messages", HAND_PICKED)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_native_qwen_is_byte_identical_to_qwen25_coder_template(qwen_template, messages, add_generation_prompt):
    expected = reference_render(qwen_template, messages, add_generation_prompt)
    assert native("qwen").render(messages, add_generation_prompt) == expected
    assert from_gguf(qwen_template).render(messages, add_generation_prompt) == expected  # the sandbox agrees


@settings(max_examples=200, deadline=None)
@given(messages=ANY_CONVERSATION, add_generation_prompt=st.booleans())
def test_native_qwen_matches_qwen25_coder_template_on_any_conversation(qwen_template, messages, add_generation_prompt):
    assert native("qwen").render(messages, add_generation_prompt) == reference_render(
        qwen_template, messages, add_generation_prompt)


@settings(max_examples=200, deadline=None)
@given(messages=ANY_CONVERSATION, add_generation_prompt=st.booleans())
def test_native_smollm2_matches_smollm2_template(smollm2_template, messages, add_generation_prompt):
    """SmolLM2's own template is ChatML plus a default system prompt when the first message is not one."""
    expected = reference_render(smollm2_template, messages, add_generation_prompt)
    assert native("smollm2").render(messages, add_generation_prompt) == expected
    if messages[0]["role"] == "system":
        assert native("chatml").render(messages, add_generation_prompt) == expected
    else:
        assert SMOLLM2_SYSTEM in expected and SMOLLM2_SYSTEM not in native("chatml").render(messages)


@pytest.mark.parametrize("messages", HAND_PICKED)
def test_native_chatml_matches_the_plain_chatml_template(messages):
    assert native("chatml").render(messages) == reference_render(CHATML_TEMPLATE, messages)


# -- the sandbox keeps Jinja's meaning for real-world template features

REALISTIC = {
    # Llama 3 style: bos token, a dated system header, trim filter, namespace, strftime_now.
    "llama3": (
        "{{- bos_token }}{%- set ns = namespace(system='') %}"
        "{%- if messages[0]['role'] == 'system' %}{%- set ns.system = messages[0]['content'] | trim %}"
        "{%- set messages = messages[1:] %}{%- endif %}"
        "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
        "{{- 'Today Date: ' + (strftime_now('%d %b %Y') if strftime_now is defined else '26 Jul 2024') + '\\n\\n' }}"
        "{{- ns.system + '<|eot_id|>' }}"
        "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"),
    # Gemma style: no system role (raise_exception), role renaming, loop.index0 parity checks.
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
        "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"),
    # Mistral style: [INST] blocks, system folded into the last user message, eos after replies, loop.last.
    "mistral": (
        "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
        "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
        "{{- bos_token }}{%- for message in loop_messages %}{%- if message['role'] == 'user' %}"
        "{%- if loop.last and system_message is defined %}{{- '[INST] ' + system_message + '\\n\\n' + message['content']"
        " + '[/INST]' }}{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
        "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
        "{%- else %}{{- raise_exception('Only user and assistant roles are supported!') }}{%- endif %}{%- endfor %}"),
    # Phi style with tojson, selectattr, join, map, length, string methods and a macro.
    "phi": (
        "{% macro turn(role, text) %}<|{{ role }}|>\n{{ text.strip() }}<|end|>\n{% endmacro %}"
        "{% set users = messages | selectattr('role', 'equalto', 'user') | list %}"
        "{% for m in messages %}{{ turn(m.role, m.content) }}{% endfor %}"
        "{{ '<|meta|>' ~ users | length ~ ' ' ~ (messages | map(attribute='role') | join(',')) ~ ' '"
        " ~ {'last': users[-1].content if users else ''} | tojson ~ '\n' }}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
}


@pytest.mark.parametrize("name", sorted(REALISTIC))
@pytest.mark.parametrize("messages", [m for m in HAND_PICKED if m[0]["role"] != "system" and len(m) % 2 == 1][:2]
                         + [[{"role": "system", "content": "sys"}, {"role": "user", "content": "u"}]])
def test_sandbox_renders_realistic_templates_exactly_as_jinja(name, messages, monkeypatch):
    import localchat.template_sandbox as sandbox

    monkeypatch.setattr(sandbox, "_strftime_now", lambda fmt: "26 Jul 2024")
    source = REALISTIC[name]

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    try:
        expected = reference_render(source, messages, bos_token="<s>", eos_token="</s>",
                                    strftime_now=lambda fmt: "26 Jul 2024", raise_exception=raise_exception)
    except jinja2.TemplateError as e:
        with pytest.raises(TemplateError, match="refused this conversation: " + re.escape(str(e))):
            from_gguf(source, "<s>", "</s>").render(messages)
        return
    assert from_gguf(source, "<s>", "</s>").render(messages) == expected


# -- choosing a template

def test_catalog_native_name_wins():
    template, warnings = choose_template("qwen", CHATML_TEMPLATE)
    assert template is NATIVE["qwen"] and warnings == []
    with pytest.raises(TemplateError, match="unknown chat template 'vicuna'"):
        choose_template("vicuna", None)


def test_gguf_template_is_used_when_the_catalog_says_nothing_or_gguf():
    for catalog in (None, "gguf"):
        template, warnings = choose_template(catalog, REALISTIC["mistral"], "<s>", "</s>")
        assert template.name == "gguf" and warnings == []
        assert template.render([{"role": "user", "content": "hi"}]) == "<s>[INST] hi[/INST]"


def test_no_template_anywhere_falls_back_to_chatml_with_a_warning():
    template, warnings = choose_template(None, None)
    assert template is NATIVE["chatml"] and "has no chat template" in warnings[0] and "ChatML" in warnings[0]
    template, warnings = choose_template("gguf", "")
    assert template is NATIVE["chatml"] and "asks for the model file's own chat template" in warnings[0]


@pytest.mark.parametrize("source, why", [
    ("{% for m in messages %}{{ m.content }", "has an error on line 1"),
    ("{{ raise_exception('I only speak in riddles') }}", "refused this conversation: I only speak in riddles"),
    ("{{ messages[0].content.nope() }}", "failed: UndefinedError"),
    ("Hello!", "leaves messages out of the prompt"),
])
def test_broken_gguf_template_falls_back_to_chatml_with_a_warning(source, why):
    template, warnings = choose_template(None, source)
    assert template is NATIVE["chatml"]
    assert len(warnings) == 1 and why in warnings[0] and "using ChatML" in warnings[0]


def test_template_that_refuses_system_messages_is_kept_with_a_warning():
    template, warnings = choose_template(None, REALISTIC["gemma"], "<bos>")
    assert template.name == "gguf"
    assert len(warnings) == 1 and "System role not supported" in warnings[0] and "system prompt" in warnings[0]
