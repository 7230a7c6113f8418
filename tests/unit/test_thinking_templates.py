"""Reasoning models' templates: the thinking switch, the history policy, and the import's render comparison."""

from __future__ import annotations

from localchat.reasoning import ReasoningFormat, detect, split_reply, template_kwargs
from localchat.template_sandbox import SandboxedTemplate
from localchat.templates import native_equivalent, with_thinking
from localchat.types import Message
from tests.support.ggufgen import CHATML_TEMPLATE
from tests.support.thinking_templates import KEEPS_THOUGHTS, PRE_OPENED, QWEN3_STYLE, QWEN25_STYLE

HISTORY = [Message("user", "Hi"), Message("assistant", "Hello!", reasoning="They greet me."), Message("user", "More?")]


def test_the_switch_goes_through_the_templates_own_variable():
    template = SandboxedTemplate(QWEN3_STYLE)
    fmt = detect(QWEN3_STYLE)
    assert fmt == ReasoningFormat(switch="enable_thinking")
    on = with_thinking(template, template_kwargs(fmt, "on")).render(HISTORY)
    off = with_thinking(template, template_kwargs(fmt, "off")).render(HISTORY)
    default = with_thinking(template, template_kwargs(fmt, "default")).render(HISTORY)
    assert on == default and on.endswith("<|im_start|>assistant\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not fmt.opens_in_thought(on) and not fmt.opens_in_thought(off)
    assert template.render(HISTORY) == default, "with_thinking leaves the original template as it was"


def test_a_pre_opened_template_starts_the_reply_inside_the_thought():
    fmt = detect(PRE_OPENED)
    template = SandboxedTemplate(PRE_OPENED)
    assert fmt.opens_in_thought(template.render(HISTORY))
    assert not fmt.opens_in_thought(with_thinking(template, template_kwargs(fmt, "off")).render(HISTORY))


def test_old_thoughts_follow_the_template():
    dropped = SandboxedTemplate(QWEN3_STYLE).render(HISTORY)
    assert "They greet me." not in dropped and "<|im_start|>assistant\nHello!<|im_end|>" in dropped
    kept = SandboxedTemplate(KEEPS_THOUGHTS).render(HISTORY)
    assert "<|im_start|>assistant\n<think>\nThey greet me.\n</think>\n\nHello!<|im_end|>" in kept
    # After the last question (a tool step) Qwen3 keeps the thought: the reply renders as the model wrote it.
    step = SandboxedTemplate(QWEN3_STYLE).render(HISTORY[:2], add_generation_prompt=False)
    assert step.endswith("<|im_start|>assistant\n<think>\nThey greet me.\n</think>\n\nHello!<|im_end|>\n")
    # Mappings (the server's messages) carry the thought as reasoning_content.
    as_dicts = [{"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!", "reasoning_content": "They greet me."}]
    assert SandboxedTemplate(KEEPS_THOUGHTS).render(as_dicts, add_generation_prompt=False).count("They greet me.") == 1


def test_a_reply_rendered_back_is_the_models_own_bytes():
    reply = "<think>\nLet me see.\n</think>\n\nThe answer."
    thought, answer = split_reply(reply)
    step = SandboxedTemplate(QWEN3_STYLE).render([Message("user", "q"), Message("assistant", answer, reasoning=thought)],
                                                 add_generation_prompt=False)
    assert step.endswith("<|im_start|>assistant\n" + reply + "<|im_end|>\n")


def test_the_import_compares_renders_not_names():
    assert native_equivalent(CHATML_TEMPLATE) == "chatml"
    assert native_equivalent(QWEN25_STYLE) == "qwen"
    # Qwen3 renders the plain probes as ChatML does; the thought and the switch tell it apart.
    assert native_equivalent(QWEN3_STYLE) is None
    assert native_equivalent(PRE_OPENED) is None
    assert native_equivalent("[INST] {{ messages[0].content }} [/INST]") is None
    assert native_equivalent("{{ raise_exception('no') }}") is None
