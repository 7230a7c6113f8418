"""Conversations in and out: Markdown for people, JSON in the OpenAI messages format for programs.

JSON export: `{"model": ..., "messages": [{"role", "content"}, ...], "localchat": {...}}`. The top level is a
valid OpenAI chat request body; our metadata (title, settings, timestamps, and per message: status, model,
tokens, TTFT, tokens/s, a reasoning model's thought) sits under "localchat", with `messages` there aligned one
to one with the top-level list. The thought stays out of the top level: some APIs refuse it in a request.
Import takes that, a plain OpenAI `{"messages": [...]}`, or a bare list of messages (whose assistant messages
may carry `reasoning_content` or `reasoning`, as vLLM, llama-server and OpenRouter write them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from localchat.errors import ConversationFormatError
from localchat.reasoning import thought_line
from localchat.store.records import METRICS, ROLES, STATUSES, Conversation

FORMATS = ("md", "json")
EXPORT_VERSION = 1
_ACCEPTED = ("an OpenAI chat request {\"messages\": [{\"role\": \"user\", \"content\": \"...\"}]}, a bare list of "
             "such messages, or a file written by `localchat history export --format json`")
_STATUS_WORDS = {"partial": "unfinished: interrupted", "cancelled": "cancelled", "error": "stopped by an error"}


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def to_json(conv: Conversation, thinking: bool = True) -> str:
    messages: list[dict[str, str]] = []
    meta: list[dict[str, Any]] = []
    if conv.system:
        messages.append({"role": "system", "content": conv.system})
        meta.append({"system_prompt": True})
    for m in conv.messages:
        messages.append({"role": m.role, "content": m.content})
        meta.append({"status": m.status, **({"model": m.model} if m.model else {}), **m.metrics(),
                     **({"reasoning": m.reasoning} if thinking and m.reasoning else {}),
                     "created": iso_time(m.created)})
    model = conv.model or next((m.model for m in reversed(conv.messages) if m.model), None)
    doc: dict[str, Any] = {"model": model} if model else {}
    doc["messages"] = messages
    doc["localchat"] = {
        "version": EXPORT_VERSION, "id": conv.id, "title": conv.title, "settings": conv.settings,
        "created": iso_time(conv.created), "updated": iso_time(conv.updated), "messages": meta,
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def to_markdown(conv: Conversation, thinking: bool = True) -> str:
    facts = [f"conversation {conv.id}"]
    if conv.model:
        facts.append(f"model {conv.model}")
    facts += [f"started {local_time(conv.created)}", f"{len(conv.messages)} messages"]
    lines = [f"# {conv.title or 'Untitled conversation'}", "", "_" + " · ".join(facts) + "_"]
    if conv.system:
        lines += ["", "## System prompt", "", conv.system]
    for m in conv.messages:
        details = []
        if m.role == "assistant":
            details += [m.model] if m.model else []
            details += [f"{m.completion_tokens} tokens"] if m.completion_tokens else []
            details += [f"{m.tokens_per_second:.1f} tokens/s"] if m.tokens_per_second else []
            details += [f"first token after {m.ttft:.2f} s"] if m.ttft else []
        if m.status in _STATUS_WORDS:
            details.append(_STATUS_WORDS[m.status])
        heading = f"## {m.role.capitalize()}" + (f" ({', '.join(details)})" if details else "")
        lines += ["", heading]
        if thinking and m.reasoning:  # folded where Markdown is rendered (GitHub, most viewers)
            summary = thought_line(m.reasoning_tokens, m.thinking_seconds)
            lines += ["", f"<details><summary>{summary}</summary>", "", m.reasoning, "", "</details>"]
        lines += ["", m.content if m.content.strip() else "_(no text)_"]
    return "\n".join(lines) + "\n"


@dataclass
class ImportedMessage:
    role: str
    content: str
    status: str = "complete"
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft: float | None = None
    tokens_per_second: float | None = None
    created: float | None = None
    reasoning: str = ""
    reasoning_tokens: int | None = None
    thinking_seconds: float | None = None


@dataclass
class ImportedConversation:
    title: str = ""
    model: str | None = None
    system: str | None = None
    settings: dict = field(default_factory=dict)
    created: float | None = None
    updated: float | None = None
    messages: list[ImportedMessage] = field(default_factory=list)


def parse_import(text: str) -> ImportedConversation:
    """Validate a JSON conversation; ConversationFormatError says what is wrong and where."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConversationFormatError(f"not valid JSON{where}", hint=f"expected {_ACCEPTED}") from None
    doc: dict = {}
    if isinstance(data, dict):
        doc, data = data, data.get("messages")
        if data is None:
            raise ConversationFormatError('no "messages" list in the file', hint=f"expected {_ACCEPTED}")
    if not isinstance(data, list):
        raise ConversationFormatError('"messages" must be a list of {"role": ..., "content": ...} objects',
                                      hint=f"expected {_ACCEPTED}")
    ours = doc.get("localchat") if isinstance(doc.get("localchat"), dict) else {}
    metas = ours.get("messages")
    aligned = isinstance(metas, list) and len(metas) == len(data)
    if not aligned:
        metas = [{}] * len(data)

    conv = ImportedConversation(
        title=_str(ours.get("title")) or _str(doc.get("title")) or "",
        model=_str(doc.get("model")),
        settings=ours.get("settings") if isinstance(ours.get("settings"), dict) else {},
        created=_timestamp(ours.get("created")),
        updated=_timestamp(ours.get("updated")),
    )
    for number, (raw, meta) in enumerate(zip(data, metas), start=1):
        meta = meta if isinstance(meta, dict) else {}
        role, content = _role_and_content(raw, number)
        # A leading system message is the conversation's system prompt (our export marks it as such).
        if number == 1 and role == "system" and (meta.get("system_prompt") or not aligned):
            conv.system = content
            continue
        message = ImportedMessage(role, content, model=_str(meta.get("model")), created=_timestamp(meta.get("created")),
                                  reasoning=_reasoning(raw, meta) if role == "assistant" else "")
        if meta.get("status") in STATUSES:
            message.status = meta["status"]
        for key in METRICS:
            value = meta.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                setattr(message, key, int(value) if key.endswith("_tokens") else float(value))
        conv.messages.append(message)
    if not any(m.role in ("user", "assistant") for m in conv.messages):
        raise ConversationFormatError("the file has no user or assistant messages to import",
                                      hint=f"expected {_ACCEPTED}")
    return conv


def _role_and_content(raw: Any, number: int) -> tuple[str, str]:
    where = f"message {number}"
    if not isinstance(raw, dict):
        raise ConversationFormatError(f'{where} is not an object like {{"role": "user", "content": "..."}}')
    role = raw.get("role")
    if role == "developer":  # OpenAI's newer name for the system role
        role = "system"
    if role not in ROLES:
        raise ConversationFormatError(f"{where} has role {role!r}; only system, user and assistant can be imported",
                                      hint="remove tool and function messages from the file")
    content = raw.get("content")
    if isinstance(content, list):  # OpenAI content parts
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", "input_text", "output_text") or not isinstance(part.get("text"), str):
                raise ConversationFormatError(f"{where} has a {kind or 'non-text'} part; only text can be imported")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise ConversationFormatError(f'{where} ({role}) has no text "content"',
                                      hint="tool calls and other non-text messages cannot be imported")
    return role, content


def _reasoning(raw: dict, meta: dict) -> str:
    """An assistant message's thought: our own export's, else what other tools write beside the content."""
    for value in (meta.get("reasoning"), raw.get("reasoning_content"), raw.get("reasoning")):
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _timestamp(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return None
