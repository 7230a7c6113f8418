"""Reasoning models over the HTTP APIs: what a request says about thinking, and the prompt it gets.

Clients say it in several dialects, all parsed into GenerationRequest.thinking (on | off | default) and the
sampling's reasoning_budget (localchat.server.schema): vLLM's and llama-server's
`chat_template_kwargs: {"enable_thinking": false}`, OpenAI's `reasoning_effort`, Ollama's `think`, and a
budget in tokens (`thinking_budget_tokens` as llama-server reads it, also `reasoning_budget_tokens`,
`thinking_budget`, `reasoning_budget`; -1 is no limit). A request that says nothing thinks as the config
says for the model (`thinking`, `models.ID.thinking`), else as its template's default.

`/no_think` and `/think` in a message are left to the template and the model: they reach the prompt as
written, so a template (or a model trained for them, as Qwen3 was) that reads them does so; no other model
is changed by a word in a message.
"""

from __future__ import annotations

from typing import Any, cast

from localchat.chat import apply_thinking
from localchat.reasoning import Thinking, of_model
from localchat.structured import OutputConstraint
from localchat.tools import ToolRequest
from localchat.tooluse import prepare
from localchat.types import Message, SamplingParams

# A level of effort as a thought's budget in tokens (None: no limit). OpenAI's reasoning_effort and Ollama's
# think take these names; "none" and "minimal" turn thinking off.
EFFORT_BUDGETS: dict[str, int | None] = {"low": 1024, "medium": 4096, "high": None}
EFFORTS = ("none", "minimal", "low", "medium", "high")


def effort(level: str) -> tuple[Thinking, int | None]:
    """(thinking, budget) of an effort level; the caller has checked the name."""
    if level in ("none", "minimal"):
        return "off", None
    return "on", EFFORT_BUDGETS[level]


def thinking_for(services: Any, model_id: str, requested: str) -> Thinking:
    """The request's choice, else the config's for this model (else the template's default)."""
    if requested != "default":
        return cast(Thinking, requested)
    return cast(Thinking, services.config.thinking_for(model_id))


def render(slot: Any, messages: list[Message] | None, thinking: Thinking, sampling: SamplingParams,
           tools: ToolRequest | None = None, response_format: OutputConstraint | None = None) -> tuple[Any, ...]:
    """(prompt, sampling, wrap) of a chat request on a loaded model: thinking as chosen
    (localchat.chat.apply_thinking), then the tools and the response format (localchat.tooluse.prepare)."""
    template, sampling = apply_thinking(slot.template, slot.engine.info, thinking, sampling)
    return prepare(template, messages or [], tools, response_format, sampling)



def ollama_think(value: Any) -> tuple[Thinking, int | None]:
    """Ollama's `think`: true / false, or a level ("low", "medium", "high") that is also a budget."""
    from localchat.server.schema import bad

    if value is None:
        return "default", None
    if isinstance(value, bool):
        return ("on" if value else "off"), None
    if value in EFFORT_BUDGETS:
        return effort(value)
    raise bad("'think' must be true, false, \"low\", \"medium\" or \"high\"", "think")


def reasons(slot: Any) -> bool:
    """Whether the loaded model thinks (its template or its vocabulary says so)."""
    info = slot.engine.info
    return of_model(info.chat_template, info.think_tags) is not None
