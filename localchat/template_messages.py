"""The messages a chat template renders, checked (a leaf both templates and template_sandbox import, so the
two import one way: templates -> template_sandbox -> template_messages)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from localchat.errors import TemplateError
from localchat.types import Message


def message_pairs(messages: Sequence[Any]) -> list[tuple[str, str]]:
    """(role, content) of each message, which may be a Message or a mapping with 'role' and 'content'."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise TemplateError("the conversation must be a list of messages", "pass a list of messages")
    pairs = []
    for i, m in enumerate(messages):
        role, content = (m.role, m.content) if isinstance(m, Message) else (
            (m.get("role"), m.get("content")) if isinstance(m, Mapping) else (None, None))
        if not isinstance(role, str) or not role:
            raise TemplateError(f"message {i} has no role", "each message needs a role and a content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TemplateError(f"message {i} ({role}) has non-text content", "give each message's content as text")
        pairs.append((role, content))
    return pairs
