"""The wire format: OpenAI chat/completions requests parsed into our types, responses and stream chunks
built as plain dicts, and the tutorial-style `POST /`. No web framework here.

Usage: every non-streamed response carries `usage`; a stream carries it on its last chunk (the one with
`finish_reason`, as llama.cpp's server does) and, when the client asks with
`stream_options: {"include_usage": true}`, also in OpenAI's extra final chunk with empty `choices`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from localchat.engine.api import ToolCallDelta
from localchat.errors import LocalchatError
from localchat.structured import OutputConstraint, SchemaError, parse_response_format, tools_constraint
from localchat.tools import ToolRequest, ToolsError, check_conversation, parse_tools
from localchat.types import Message, ToolCall, Usage

MAX_STOP_STRINGS = 16


class ApiError(LocalchatError):
    """An error answered as OpenAI's error JSON with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, extra: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra or {}

    def body(self) -> dict:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        error.update(self.extra)
        return {"error": error}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


# --- requests -------------------------------------------------------------------------------------


@dataclass
class GenerationRequest:
    """What the chat, completions and tutorial endpoints have in common once parsed."""

    model: str | None
    sampling: dict[str, Any] = field(default_factory=dict)  # overrides of the configured SamplingParams
    stream: bool = False
    include_usage: bool = False
    messages: list[Message] | None = None  # chat
    prompt: str | None = None  # completions (raw, no template)
    thinking: str = "default"  # chat: on | off | default (the template's own default)
    tools: ToolRequest | None = None  # chat: the functions the model may call
    response_format: OutputConstraint | None = None  # chat: json_object / json_schema


def parse_json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"the request body is not valid JSON ({exc})") from None
    except RecursionError:  # [[[[... the json module parses recursively
        raise bad("the request body is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object")
    return data


def parse_chat(data: dict) -> GenerationRequest:
    req = _common(data)
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("'messages' must be a non-empty list of {role, content} objects", "messages")
    req.messages = [_message(m, i) for i, m in enumerate(raw)]
    if req.messages[-1].role == "assistant":
        raise bad("the last message must come from the user (continuing an assistant message is not supported)",
                  "messages")
    for key in ("functions", "function_call"):
        if data.get(key):
            raise bad(f"'{key}' is the deprecated form of function calling: send 'tools' and 'tool_choice'", key)
    try:
        check_conversation(req.messages)
        req.tools = parse_tools(data.get("tools"), data.get("tool_choice"), data.get("parallel_tool_calls"))
        tools_constraint(req.tools, "json")  # each function's schema must become a grammar: refused here if not
        req.response_format = parse_response_format(data.get("response_format"))
    except (ToolsError, SchemaError) as exc:
        raise bad(exc.message, exc.param, "invalid_schema" if isinstance(exc, SchemaError) else None) from None
    if req.tools is not None and req.tools.active and req.response_format is not None:
        raise bad("'response_format' and 'tools' cannot constrain one reply together: send one of them "
                  "(or tool_choice \"none\")", "response_format")
    if data.get("logprobs") or data.get("top_logprobs"):
        raise bad("logprobs are not supported by this server", "logprobs")
    _max_tokens(req, data, "max_completion_tokens")
    _thinking(req, data)
    return req


def _thinking(req: GenerationRequest, data: dict) -> None:
    """Thinking on, off or the template's default, and its budget, from what clients send (the dialects are
    listed in localchat.server.thinking): an explicit budget wins over the one an effort level implies."""
    from localchat.server.thinking import EFFORTS, effort

    kwargs = data.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise bad("'chat_template_kwargs' must be an object, e.g. {\"enable_thinking\": false}",
                      "chat_template_kwargs")
        switch = kwargs.get("enable_thinking")
        if switch is not None and not isinstance(switch, bool):
            raise bad("'chat_template_kwargs.enable_thinking' must be true or false", "chat_template_kwargs")
        if switch is not None:
            req.thinking = "on" if switch else "off"
    level = data.get("reasoning_effort")
    if level is not None:
        if level not in EFFORTS:
            raise bad(f"'reasoning_effort' must be one of {', '.join(EFFORTS)}", "reasoning_effort")
        req.thinking, budget = effort(level)
        if budget is not None:
            req.sampling["reasoning_budget"] = budget
    think = data.get("think")
    if think is not None:
        if not isinstance(think, bool):
            raise bad("'think' must be true or false", "think")
        req.thinking = "on" if think else "off"
    for name in ("thinking_budget_tokens", "reasoning_budget_tokens", "thinking_budget", "reasoning_budget"):
        value = data.get(name)
        if value is None:
            continue
        budget = _integer(value, name)
        if budget < -1:
            raise bad(f"'{name}' must be a number of tokens (0 closes the thought at once, -1 is no limit)", name)
        req.sampling["reasoning_budget"] = None if budget == -1 else budget


def parse_completion(data: dict) -> GenerationRequest:
    req = _common(data)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("'prompt' must be a string (one prompt per request; token arrays are not supported)", "prompt")
    if not prompt:
        raise bad("'prompt' is empty", "prompt")
    req.prompt = prompt
    if data.get("echo"):
        raise bad("echo is not supported by this server", "echo")
    if data.get("suffix"):
        raise bad("suffix (insertion) is not supported by this server", "suffix")
    if data.get("logprobs") not in (None, 0, False):
        raise bad("logprobs are not supported by this server", "logprobs")
    if data.get("best_of") not in (None, 1):
        raise bad("best_of must be 1", "best_of")
    return req


def _common(data: dict) -> GenerationRequest:
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise bad("'model' must be a model id (GET /v1/models lists them)", "model")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false", "stream")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise bad("'stream_options' must be {\"include_usage\": true|false}", "stream_options")
        include_usage = options.get("include_usage", False)
    n = data.get("n")
    if n not in (None, 1):
        raise bad("n must be 1 (one choice per request)", "n")
    if data.get("logit_bias"):
        raise bad("logit_bias is not supported by this server", "logit_bias")
    req = GenerationRequest(model=model, stream=stream, include_usage=include_usage)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p", "repeat_penalty"):
        value = data.get(name)
        if value is not None:
            req.sampling[name] = _number(value, name)
    for name in ("top_k", "seed"):
        value = data.get(name)
        if value is not None:
            req.sampling[name] = _integer(value, name)
    _max_tokens(req, data, "max_tokens")
    stop = data.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise bad("'stop' must be a string or a list of strings", "stop")
        if len(stops) > MAX_STOP_STRINGS:
            raise bad(f"at most {MAX_STOP_STRINGS} stop strings", "stop")
        req.sampling["stop"] = tuple(stops)
    return req


def _max_tokens(req: GenerationRequest, data: dict, name: str) -> None:
    value = data.get(name)
    if value is not None:
        req.sampling["max_tokens"] = _integer(value, name)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"'{name}' must be a number", name)
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{name}' must be a whole number", name)
    return value


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _message(raw: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise bad(f"{where} must be an object with 'role' and 'content'", where)
    role = _ROLES.get(raw.get("role"))
    if role is None:
        raise bad(f"{where}.role must be system, user, assistant or tool (got {raw.get('role')!r})", f"{where}.role")
    content = raw.get("content")
    if isinstance(content, list):  # content parts: only text ones
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where}.content: only text parts are supported", f"{where}.content")
            texts.append(part["text"])
        content = "".join(texts)
    if content is None and role == "assistant":  # null (or left out) beside tool_calls, as OpenAI allows
        content = ""
    if not isinstance(content, str):
        raise bad(f"{where}.content must be text", f"{where}.content")
    calls = _tool_calls(raw.get("tool_calls"), where) if role == "assistant" else ()
    call_id = raw.get("tool_call_id")
    if role == "tool" and call_id is not None and not isinstance(call_id, str):
        raise bad(f"{where}.tool_call_id must be the id of the call it answers", f"{where}.tool_call_id")
    # A thought sent back (vLLM and llama-server write reasoning_content, OpenRouter reasoning): kept apart;
    # the model's template decides whether it goes into the prompt (Qwen3's drops it).
    reasoning = raw.get("reasoning_content", raw.get("reasoning")) if role == "assistant" else None
    return Message(role, content, calls, call_id if role == "tool" else None,
                   reasoning=reasoning if isinstance(reasoning, str) else "")


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    calls = []
    for i, call in enumerate(raw):
        at = f"{where}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise bad(f"{at} must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}", at)
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, dict):  # Ollama's clients send an object
            arguments = json.dumps(arguments, ensure_ascii=False)
        if not isinstance(arguments, str):
            raise bad(f"{at}.function.arguments must be a JSON text", f"{at}.function.arguments")
        call_id = call.get("id")
        calls.append(ToolCall(call_id if isinstance(call_id, str) and call_id else f"call_{i}", function["name"],
                              arguments))
    return tuple(calls)


# --- the tutorial-style POST / --------------------------------------------------------------------


@dataclass
class TutorialRequest:
    """{"prompt", "history", "max_length", "top_p", "temperature"} as in the FastAPI tutorials (ChatGLM's
    api.py). History comes as [[question, answer], ...] or as [{"role", "content"}, ...] and is answered
    in the same shape. max_length is the whole sequence (prompt + reply) in tokens, as there."""

    prompt: str
    history: list[Message]
    pairs: bool  # the history's shape
    max_length: int | None
    sampling: dict[str, Any]
    model: str | None


def parse_tutorial(data: dict) -> TutorialRequest:
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad("'prompt' must be non-empty text", "prompt")
    raw = data.get("history") or []
    if not isinstance(raw, list):
        raise bad("'history' must be a list", "history")
    history: list[Message] = []
    pairs = True
    if raw and all(isinstance(h, dict) for h in raw):
        pairs = False
        history = [_message(h, i) for i, h in enumerate(raw)]
    else:
        for i, pair in enumerate(raw):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise bad(f"history[{i}] must be [question, answer] (or every item a {{role, content}} object)",
                          "history")
            history += [Message("user", pair[0]), Message("assistant", pair[1])]
    sampling: dict[str, Any] = {}
    for name in ("top_p", "temperature"):
        if data.get(name) is not None:
            sampling[name] = _number(data[name], name)
    max_length = data.get("max_length")
    if max_length is not None:
        max_length = _integer(max_length, "max_length")
        if max_length < 2:
            raise bad("'max_length' must be at least 2 (tokens of prompt and reply together)", "max_length")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise bad("'model' must be a model id", "model")
    return TutorialRequest(prompt, history, pairs, max_length, sampling, model)


def tutorial_response(req: TutorialRequest, reply: str) -> dict:
    if req.pairs:
        history: list = [[q.content, a.content] for q, a in zip(req.history[::2], req.history[1::2])]
        history.append([req.prompt, reply])
    else:
        history = [m.to_dict() for m in req.history] + [
            {"role": "user", "content": req.prompt}, {"role": "assistant", "content": reply}]
    return {"response": reply, "history": history, "status": 200, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


# --- responses ------------------------------------------------------------------------------------


def usage_dict(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        # The KV cache of the previous request that was reused, in OpenAI's own field.
        "prompt_tokens_details": {"cached_tokens": max(0, usage.prompt_tokens - usage.prompt_eval_tokens)},
        **({"completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}
           if usage.reasoning_tokens is not None else {}),
    }


def finish_reason(reason: str) -> str:
    return reason if reason in ("length", "tool_calls") else "stop"


def tool_call_delta(delta: ToolCallDelta) -> dict:
    """One streamed piece of a call, as OpenAI sends it: id, type and name only in its first piece."""
    out: dict[str, Any] = {"index": delta.index}
    function: dict[str, Any] = {"arguments": delta.arguments}
    if delta.id is not None:
        out.update(id=delta.id, type="function")
    if delta.name is not None:
        function["name"] = delta.name
    out["function"] = function
    return out


class ResponseBuilder:
    """Ids, timestamps and the shapes of one response (chat or text completion)."""

    def __init__(self, model: str, chat: bool) -> None:
        self.model = model
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _base(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None}

    def complete(self, text: str, reason: str, usage: Usage, reasoning: str = "",
                 tool_calls: tuple[ToolCall, ...] = ()) -> dict:
        out = self._base("chat.completion" if self.chat else "text_completion")
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text or (None if tool_calls else "")}
            if reasoning:
                message["reasoning_content"] = reasoning  # as llama-server and vLLM return a thought
            if tool_calls:
                message["tool_calls"] = [c.to_dict() for c in tool_calls]
            choice = {"index": 0, "message": message, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
        choice["finish_reason"] = finish_reason(reason)
        out["choices"] = [choice]
        out["usage"] = usage_dict(usage)
        return out

    def chunk(self, text: str | None = None, *, first: bool = False, reason: str | None = None,
              usage: Usage | None = None, usage_only: bool = False, reasoning: str | None = None,
              tool_call: ToolCallDelta | None = None) -> bytes:
        out = self._base("chat.completion.chunk" if self.chat else "text_completion")
        if usage_only:
            out["choices"] = []
        elif self.chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            if reasoning is not None:
                delta["reasoning_content"] = reasoning
            if tool_call is not None:
                delta["tool_calls"] = [tool_call_delta(tool_call)]
            out["choices"] = [{"index": 0, "delta": delta, "logprobs": None,
                               "finish_reason": finish_reason(reason) if reason else None}]
        else:
            out["choices"] = [{"index": 0, "text": text or "", "logprobs": None,
                               "finish_reason": finish_reason(reason) if reason else None}]
        out["usage"] = usage_dict(usage) if usage is not None else None
        return sse(out)


def sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
