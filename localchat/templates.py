"""Chat templates: turn a conversation into the prompt text a model was trained on.

Native renderers for the ChatML `<|im_start|>` family are exact and byte-stable: the prompt of turn N
starts with the prompt of turn N-1 plus the reply, which is what lets the engine reuse its KV cache.
A GGUF's own Jinja template is rendered only in the sandbox (localchat.template_sandbox).

Which template a model gets: the catalog entry's `template:` first (a native name, or `gguf` for the
file's own), then the file's own template, then ChatML with a warning the user sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from localchat.errors import TemplateError
from localchat.template_messages import message_pairs
from localchat.types import Message

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
GGUF = "gguf"  # the catalog's name for "the model file's own template"


class ChatTemplate(Protocol):
    name: str

    def render(self, messages: Sequence[Message | Mapping[str, str]], add_generation_prompt: bool = True) -> str: ...


@dataclass(frozen=True)
class ChatMLTemplate:
    """`<|im_start|>{role}\\n{content}<|im_end|>\\n` per message; `default_system` is inserted first when the
    conversation does not start with a system message (as Qwen2.5's and SmolLM2's own templates do)."""

    name: str = "chatml"
    default_system: str | None = None

    def render(self, messages: Sequence[Message | Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        pairs = message_pairs(messages)
        parts = []
        if self.default_system is not None and (not pairs or pairs[0][0] != "system"):
            parts.append(f"<|im_start|>system\n{self.default_system}<|im_end|>\n")
        parts.extend(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in pairs)
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)


NATIVE: dict[str, ChatMLTemplate] = {
    "chatml": ChatMLTemplate("chatml"),
    "qwen": ChatMLTemplate("qwen", QWEN_SYSTEM),
    "smollm2": ChatMLTemplate("smollm2", SMOLLM2_SYSTEM),
}
TEMPLATE_NAMES = (*NATIVE, GGUF)  # what a catalog entry's `template:` may say


def native(name: str) -> ChatTemplate:
    try:
        return NATIVE[name]
    except KeyError:
        raise TemplateError(f"unknown chat template {name!r}",
                            f"use one of: {', '.join(TEMPLATE_NAMES)} (gguf = the model file's own)") from None


def from_gguf(source: str, bos_token: str | None = None, eos_token: str | None = None) -> ChatTemplate:
    """A GGUF's own `tokenizer.chat_template`, compiled in the sandbox. Raises TemplateError."""
    from localchat.template_sandbox import SandboxedTemplate  # jinja2 only when a model needs it

    return SandboxedTemplate(source, bos_token, eos_token)


# A sample conversation each chosen GGUF template must render, with every message's text in the prompt.
_SAMPLE = [
    {"role": "user", "content": "Hello, who are you? 你好"},
    {"role": "assistant", "content": "I am a helpful assistant."},
    {"role": "user", "content": "Tell me a joke."},
]
_SYSTEM = {"role": "system", "content": "You are a concise assistant."}


def _try_gguf(source: str, bos_token: str | None, eos_token: str | None) -> tuple[ChatTemplate, list[str]]:
    template = from_gguf(source, bos_token, eos_token)
    prompt = template.render(_SAMPLE)
    missing = [m["content"] for m in _SAMPLE if m["content"] not in prompt]
    if missing:
        raise TemplateError(f"the model's chat template leaves messages out of the prompt ({missing[0]!r})")
    warnings = []
    try:
        template.render([_SYSTEM, *_SAMPLE])
    except TemplateError as e:
        warnings.append(f"{e.message}: this model may not accept a system prompt")
    return template, warnings


def choose_template(catalog_template: str | None, gguf_template: str | None,
                    bos_token: str | None = None, eos_token: str | None = None) -> tuple[ChatTemplate, list[str]]:
    """The template for a model and the warnings to show its user. Raises TemplateError only for a
    catalog `template:` that names no known template."""
    if catalog_template and catalog_template != GGUF:
        return native(catalog_template), []
    if not gguf_template:
        why = ("the catalog asks for the model file's own chat template, but the file has none"
               if catalog_template == GGUF else "the model file has no chat template")
        return NATIVE["chatml"], [f"{why}; using ChatML (<|im_start|>), which may not suit this model"]
    try:
        return _try_gguf(gguf_template, bos_token, eos_token)
    except TemplateError as e:
        return NATIVE["chatml"], [f"{e.message}; using ChatML (<|im_start|>) instead, which may not suit this model"]


# -- reasoning models: the thinking switch, and which native renderer (if any) a file's template equals

def with_thinking(template: ChatTemplate, variables: Mapping[str, bool]) -> ChatTemplate:
    """The template rendering with the model's thinking switch set (localchat.reasoning.template_kwargs);
    native renderers have no switch and stay as they are."""
    from localchat.template_sandbox import SandboxedTemplate

    if variables and isinstance(template, SandboxedTemplate):
        return template.with_variables(**variables)
    return template


# Conversations a native renderer must render byte for byte as a file's own template does before it stands in
# for it: with and without a system prompt, a reply that carries a thought (Qwen3 drops it), a last reply
# after the last question (Qwen3 keeps that one), and the thinking switch off.
_PROBE_HISTORY = [{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello! 你好", "reasoning_content": "They greet me."},
                  {"role": "user", "content": "Again?"}]
_PROBES: list[tuple[list[dict[str, str]], bool, dict[str, bool]]] = [
    ([{"role": "user", "content": "Hi"}], True, {}),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], True, {}),
    (_PROBE_HISTORY, True, {}),
    (_PROBE_HISTORY, True, {"enable_thinking": False}),
    (_PROBE_HISTORY[:2], False, {}),
]


def native_equivalent(source: str, bos_token: str | None = None, eos_token: str | None = None) -> str | None:
    """The native renderer that renders every probe conversation exactly as the file's template does, or None.

    Decided by rendering, never by the file's name: Qwen2.5's template is the `qwen` renderer (its default
    system prompt included), a Qwen3 template is none of them (no default system prompt, a thinking switch,
    old thoughts dropped), a plain ChatML template is `chatml`."""
    from localchat.template_sandbox import SandboxedTemplate

    try:
        own = SandboxedTemplate(source, bos_token, eos_token)
        renders = [own.with_variables(**variables).render(messages, add_generation_prompt=gen)
                   for messages, gen, variables in _PROBES]
    except TemplateError:
        return None
    for name, renderer in NATIVE.items():
        if all(renderer.render(messages, add_generation_prompt=gen) == want
               for (messages, gen, _), want in zip(_PROBES, renders)):
            return name
    return None
