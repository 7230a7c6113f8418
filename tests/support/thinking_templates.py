"""Chat templates of reasoning models, written for the tests (modelled on the behaviour of the real Qwen3,
Qwen3.5 and QwQ templates vendored by llama.cpp; see docs/models.md).

- QWEN3_STYLE: the thought is the model's to open (`<think>` is its first token); `enable_thinking=false`
  closes an empty thought in the prompt; old thoughts are dropped from the history (kept only after the last
  user message, i.e. in a tool-calling step).
- PRE_OPENED: as Qwen3.5 and Qwen3 Thinking-2507: the prompt opens the thought, so the reply starts inside it.
- KEEPS_THOUGHTS: a template that sends every thought back (no switch): the history policy follows the template.
- NO_THINK is plain ChatML (tests.support.ggufgen.CHATML_TEMPLATE): a model that does not reason.
"""

from __future__ import annotations

_HISTORY = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(last_query=messages|length - 1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' or (m.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'assistant' %}"
    "{%- set content = m.content %}{%- set reasoning = '' %}"
    "{%- if m.reasoning_content is string %}{%- set reasoning = m.reasoning_content %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
)

QWEN3_STYLE = _HISTORY + (
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

PRE_OPENED = _HISTORY + (
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}{{- '<think>\\n' }}{%- endif %}"
    "{%- endif %}"
)

KEEPS_THOUGHTS = (
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.reasoning_content %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2.5's behaviour (for the import's render comparison): ChatML with a default system prompt.
QWEN25_STYLE = (
    "{%- if messages[0].role != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


# A thought long enough (hundreds of tokens) that an end-now sent on its first words arrives mid-thought. The
# answer's first letter is not in it, so the chain goes from the closing "\n\n" token straight to the answer.
LONG_THOUGHT = " ".join(f"step{i} weighs option {chr(65 + i % 6)}{i * 7919 % 1000}" for i in range(120))

# What the tiny reasoning models (tests.support.ggufgen.make_tiny_gguf(thought=..., reply=...)) say greedily.
THOUGHT = "Let me think. Yes, a greeting."
ANSWER = "Hi there!"
