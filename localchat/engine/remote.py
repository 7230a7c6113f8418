"""A remote engine: an OpenAI-compatible server (vLLM, llama.cpp's llama-server, another `localchat serve`)
behind the same interface as EngineClient (localchat.engine.api.Engine), so ChatSession, `localchat run`
and the TUI use it unchanged.

Standard library only (http.client): no new dependency. A chat turn hands this client the conversation as
messages (RemoteTemplate.render returns them) and it calls POST /chat/completions, so the server applies
its own chat template; a plain string prompt goes to POST /completions instead. Replies stream as SSE.
Tools go to the server as OpenAI's `tools` and come back as its `tool_calls` (the server renders and parses
them; localchat.tooluse sends them so), a response format as OpenAI's `response_format`.

Token counts (the context budget) are estimated, not asked of the server: /tokenize is not part of the
OpenAI API and differs between servers. The estimate starts at 3 UTF-8 bytes a token (safe for English,
about right for CJK) and is corrected by the real prompt_tokens each reply reports.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from localchat.engine.api import Event, FinishReason, Prompt, ReasoningDelta, TextDelta, ToolCallDelta
from localchat.engine.lifecycle import CancellingGeneration, ClosingEngine
from localchat.errors import ContextOverflowError, EngineError, LocalchatError
from localchat.netutil import tls_context
from localchat.tools import new_call_id
from localchat.types import Embeddings, Message, ModelInfo, SamplingParams, ToolCall, Usage

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0  # between two chunks; a busy server may queue a request for a while
DEFAULT_CONTEXT = 4096  # when neither the catalog nor the server says
_MESSAGE_OVERHEAD = 5  # tokens a chat message costs besides its content (role markers)
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "cancelled": "cancelled", "tool_calls": "tool_calls"}


class RemoteTemplate:
    """The 'template' of a remote engine: the server renders the chat itself, so messages pass through
    with their tool calls and results (a thought stays here: the server's template would not want it)."""

    name = "remote"

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[Message]:
        return [Message(m.role, m.content, m.tool_calls, m.tool_call_id) for m in messages]


class _Server:
    """How to reach the server and read its refusals: what the client and its generations share."""

    def __init__(self, endpoint: str, api_key: str | None, key_env: str | None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._api_key = api_key
        self._key_env = key_env  # named in messages about a refused key, never the key itself
        self._url = urlsplit(self.endpoint)

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        host, port = self._url.hostname or "", self._url.port
        if self._url.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=tls_context())
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def path(self, path: str) -> str:
        return (self._url.path.rstrip("/") or "") + path

    def unreachable_error(self, exc: BaseException) -> EngineError:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return EngineError(f"cannot reach the remote engine at {self.endpoint} ({reason})",
                           hint="check that the server runs and the endpoint in the catalog is right")

    def http_error(self, status: int, data: bytes) -> LocalchatError:  # EngineError or ContextOverflowError
        message = _error_message(data) or http.client.responses.get(status, "error")
        text = f"the remote engine at {self.endpoint} answered {status}: {message}"
        if status in (401, 403):
            env = self._key_env
            hint = (f"check the key in ${env}" if env else
                    "the server needs a key: name the variable that holds it in the entry's `api_key_env`")
            return EngineError(text, hint=hint)
        if status == 400 and "context" in message.lower():
            return ContextOverflowError(text, hint="start a new conversation or shorten the message")
        return EngineError(text)


class _TokenEstimate:
    """Tokens of a prompt, estimated from its UTF-8 bytes and corrected by what the server counts."""

    def __init__(self) -> None:
        self.bytes_per_token = 3.0

    def estimate(self, item: Prompt) -> int:
        if isinstance(item, str):
            return math.ceil(len(item.encode("utf-8")) / self.bytes_per_token)
        return sum(self.estimate(_text_of(m)) + _MESSAGE_OVERHEAD for m in item)

    @staticmethod
    def prompt_bytes(prompt: Prompt) -> int:
        if isinstance(prompt, str):
            return len(prompt.encode("utf-8"))
        return sum(len(_text_of(m).encode("utf-8")) for m in prompt)

    def learn(self, prompt_bytes: int, prompt_tokens: int, n_messages: int) -> None:
        """Correct the bytes-per-token estimate with what the server counted (never above 4: stay safe)."""
        content_tokens = prompt_tokens - n_messages * _MESSAGE_OVERHEAD
        if prompt_bytes >= 200 and content_tokens > 0:
            self.bytes_per_token = max(1.0, min(4.0, prompt_bytes / content_tokens))


class RemoteEngineClient(ClosingEngine):
    """A model on an OpenAI-compatible server (localchat.engine.api.Engine). Requests are independent
    HTTP calls, so generations do not wait for each other."""

    def __init__(self, endpoint: str, model: str, api_key: str | None, info: ModelInfo,
                 key_env: str | None = None) -> None:
        self._server = _Server(endpoint, api_key, key_env)
        self.endpoint = self._server.endpoint
        self.model = model
        self.info = info
        self._tokens = _TokenEstimate()
        self._closed = False
        self._unreachable: EngineError | None = None

    @classmethod
    def start(cls, endpoint: str, model: str, api_key: str | None = None, *, n_ctx: int | None = None,
              key_env: str | None = None) -> "RemoteEngineClient":
        """Check that the server answers and serves `model` (GET /models), learn its context window.

        n_ctx: a limit of ours (catalog `context`, --n-ctx); the window used is the smaller of it and what
        the server reports (vLLM max_model_len, llama-server n_ctx, localchat max_model_len).
        """
        t0 = time.perf_counter()
        info = ModelInfo(path=f"{endpoint.rstrip('/')}#{model}", architecture="remote")
        client = cls(endpoint, model, api_key, info, key_env=key_env)
        listed = client._list_models()
        notes = [f"remote engine {client.endpoint}, model {model}"]
        served: dict[str, Any] | None = None
        if listed is not None:
            ids = [m.get("id") for m in listed if isinstance(m, dict)]
            served = next((m for m in listed if isinstance(m, dict) and m.get("id") == model), None)
            if served is None:
                raise EngineError(f"the remote engine at {client.endpoint} does not serve '{model}'",
                                  hint="it serves: " + (", ".join(map(str, ids)) or "nothing") +
                                  "; set `remote_model` in the catalog entry to one of them")
        server_ctx = _context_of(served) if served else None
        windows = [w for w in (n_ctx, server_ctx) if w]
        client.info.n_ctx = min(windows) if windows else DEFAULT_CONTEXT
        client.info.n_ctx_train = server_ctx or 0
        if not windows:
            notes.append(f"the server does not say its context window; assuming {DEFAULT_CONTEXT} tokens "
                         "(set `context` in the catalog entry)")
        client.info.notes = notes
        client.info.load_seconds = time.perf_counter() - t0
        return client

    # --- the Engine interface --------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self._closed and self._unreachable is None

    def generate(self, prompt: Prompt, sampling: SamplingParams) -> "RemoteGeneration":
        """Start a reply: messages go to /chat/completions, a rendered string prompt to /completions."""
        if self._closed:
            raise EngineError("the remote engine client was closed")
        body: dict[str, Any] = {"model": self.model, "stream": True, "stream_options": {"include_usage": True}}
        if isinstance(prompt, str):
            path, body["prompt"] = "/completions", prompt
        else:
            path, body["messages"] = "/chat/completions", [m.to_dict() for m in prompt]
        body.update(_sampling_body(sampling, chat=not isinstance(prompt, str)))
        generation = RemoteGeneration(self._server, self._tokens, path, body, prompt, on_unreachable=self._went_away)
        generation._open()
        return generation

    def count_tokens(self, texts: Sequence[Prompt]) -> list[int]:
        """Estimated tokens of each text (or list of messages, with their role markers)."""
        return [self._tokens.estimate(t) for t in texts]

    def embed(self, texts: Sequence[str], truncate: bool = False) -> Embeddings:
        """The server's POST /embeddings for these texts (OpenAI's API has no `truncate`: the server decides)."""
        if self._closed:
            raise EngineError("the remote engine client was closed")
        payload = self._post("/embeddings", {"model": self.model, "input": list(texts), "encoding_format": "float"})
        rows = payload.get("data") if isinstance(payload, dict) else None
        try:
            ordered = sorted(rows, key=lambda r: r["index"]) if isinstance(rows, list) else []
            vectors = [[float(v) for v in r["embedding"]] for r in ordered]
        except (KeyError, TypeError, ValueError):
            vectors = []
        if len(vectors) != len(texts):
            raise EngineError(f"{self.endpoint}/embeddings did not answer one vector per input",
                              hint="is the remote model able to compute embeddings?")
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        return Embeddings(vectors, _int(usage.get("prompt_tokens")) or 0)

    def close(self) -> None:
        self._closed = True

    # --- plumbing ---------------------------------------------------------------------------------

    def _went_away(self, error: EngineError) -> None:
        self._unreachable = error

    def _request(self, method: str, path: str, timeout: float, body: bytes | None = None) -> tuple[int, bytes]:
        """One request on a connection of its own: (status, body); an unreachable server as the error it means."""
        server = self._server
        conn = server.connection(timeout)
        try:
            conn.request(method, server.path(path), body=body, headers=server.headers())
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise server.unreachable_error(exc) from None
        finally:
            conn.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One JSON request and its JSON answer; the server's refusal as the error it means."""
        status, data = self._request("POST", path, READ_TIMEOUT, json.dumps(body).encode("utf-8"))
        if status != 200:
            raise self._server.http_error(status, data)
        try:
            payload = json.loads(data)
        except ValueError:
            raise EngineError(f"{self.endpoint}{path} did not answer JSON") from None
        return payload if isinstance(payload, dict) else {}

    def _list_models(self) -> list[Any] | None:
        """GET /models; None when the server has no such route (then the first reply tells)."""
        status, data = self._request("GET", "/models", CONNECT_TIMEOUT)
        if status == 404:
            return None
        if status != 200:
            raise self._server.http_error(status, data)
        try:
            payload = json.loads(data)
        except ValueError:
            raise EngineError(f"{self.endpoint}/models did not answer JSON", hint="is this an OpenAI-compatible base URL?") from None
        listed = payload.get("data") if isinstance(payload, dict) else None
        return listed if isinstance(listed, list) else None


class RemoteGeneration(CancellingGeneration):
    """A streamed remote reply: iterating yields TextDelta, ReasoningDelta and ToolCallDelta events
    (localchat.engine.api.Generation); a reply that called tools ends with `tool_calls` and finish_reason
    "tool_calls", as localchat.tooluse.ToolCallingGeneration does for a local engine.

    `cancel()` from any thread shuts the socket: the read in progress returns at once and the server
    sees the client go away (a `localchat serve` or vLLM then stops generating).
    """

    def __init__(self, server: _Server, tokens: _TokenEstimate, path: str, body: dict[str, Any], prompt: Prompt,
                 *, on_unreachable: Callable[[EngineError], None]) -> None:
        self._server = server
        self._tokens = tokens
        self._on_unreachable = on_unreachable
        self._id = uuid.uuid4().hex
        self._path = path
        self._body = body
        self._chat = path == "/chat/completions"
        self._prompt = prompt
        # the tools' JSON is part of what the server counts: leave it out and the bytes-per-token learnt drops
        self._prompt_bytes = tokens.prompt_bytes(prompt) + len(json.dumps(body.get("tools", "")).encode("utf-8"))
        self._parts: list[str] = []
        self._pending: list[Event] = []  # the rest of a chunk that held more than one event
        self._calls = _ToolCalls()
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._ended = False
        self._t_start = 0.0
        self._t_first = 0.0
        self._t_last = 0.0
        self._server_finish: str | None = None
        self._server_usage: dict[str, Any] | None = None
        self._chunks = 0
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None

    @property
    def id(self) -> str:
        return self._id

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The calls the server streamed, in order, once the reply has ended (before: those so far)."""
        return self._calls.calls()

    def _open(self) -> None:
        """Connect and send the request (a refused connection is raised here, like a dead worker)."""
        self._t_start = time.perf_counter()
        server = self._server
        conn = server.connection(CONNECT_TIMEOUT)
        try:
            conn.connect()
            conn.sock.settimeout(READ_TIMEOUT)
            conn.request("POST", server.path(self._path), body=json.dumps(self._body).encode("utf-8"),
                         headers=server.headers())
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            error = server.unreachable_error(exc)
            self._on_unreachable(error)
            raise error from None
        with self._lock:
            self._conn = conn
        if self._cancelled.is_set():
            self._shutdown()

    def __iter__(self) -> "RemoteGeneration":
        return self

    def __next__(self) -> Event:
        if self._pending:
            return self._pending.pop(0)
        while not self._ended:
            try:
                event = self._next_event()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if self._cancelled.is_set():
                    self._end("cancelled")
                    break
                self._end("error")
                error = EngineError(f"the remote engine at {self._server.endpoint} broke off the reply ({exc})",
                                    hint="the text received so far is kept; try again")
                raise error from None
            if event is None:  # [DONE] or the end of the stream
                self._end("cancelled" if self._cancelled.is_set() else self._server_finish or "stop")
                break
            events = self._events(event)
            if events:
                now = time.perf_counter()
                if not self._t_first:
                    self._t_first = now
                self._t_last = now
                self._pending = events[1:]
                return events[0]
        raise StopIteration

    def cancel(self) -> None:
        """Stop the reply (thread-safe, idempotent); iteration then ends with finish_reason 'cancelled'."""
        if self._ended or self._cancelled.is_set():
            return
        self._cancelled.set()
        self._shutdown()

    def end_thought(self) -> bool:
        """Always False: an OpenAI-compatible server has no call that ends a running thought (its budget
        is set per request, `reasoning_budget` in the sampling), so the thought goes on; cancel() stops the
        reply instead."""
        return False

    # --- plumbing ---------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _response(self) -> http.client.HTTPResponse:
        if self._resp is None:
            assert self._conn is not None
            resp = self._conn.getresponse()
            if resp.status != 200:
                data = resp.read()
                self._end("error")
                raise self._server.http_error(resp.status, data)
            self._resp = resp
        return self._resp

    def _next_event(self) -> dict[str, Any] | None:
        """The next `data:` payload of the SSE stream, or None at [DONE] / the end."""
        if self._cancelled.is_set():
            return None
        resp = self._response()
        data: list[str] = []
        while True:
            raw = resp.readline()
            if not raw:  # the server closed the stream
                return json.loads("\n".join(data)) if data else None
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if data:
                    break
                continue
            if line.startswith(":"):
                continue  # an SSE comment (keep-alive)
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
        payload = "\n".join(data)
        if payload.strip() == "[DONE]":
            return None
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise ValueError("an SSE event that is not a JSON object")
        if "error" in event:
            self._end("error")
            raise EngineError(f"the remote engine at {self._server.endpoint} failed: "
                              f"{_error_message(payload.encode()) or event['error']}")
        return event

    def _events(self, event: dict[str, Any]) -> list[Event]:
        """The events of one chunk, the thought first, then the answer, then tool calls: vLLM and llama-server
        stream a reasoning model's thought as `reasoning_content` (OpenRouter and newer vLLM as `reasoning`),
        apart from `content`, and calls as `tool_calls` pieces."""
        if isinstance(event.get("usage"), dict):
            self._server_usage = event["usage"]
        text = thought = ""
        calls: list[Event] = []
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if self._chat:
                delta = choice.get("delta") or {}
                text += delta.get("content") or ""
                reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
                thought += reasoning if isinstance(reasoning, str) else ""
                calls += self._calls.feed(delta.get("tool_calls"))
            else:
                text += choice.get("text") or ""
            if choice.get("finish_reason"):
                self._server_finish = choice["finish_reason"]
        events: list[Event] = [ReasoningDelta(thought)] if thought else []
        if text:
            self._parts.append(text)
            events.append(TextDelta(text))
        events += calls
        if events:
            self._chunks += 1
        return events

    def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        # an error raises instead of ending: finish_reason stays None, usage says "error"
        finish = {"stop": "stop", "length": "length", "cancelled": "cancelled", "error": "error"}.get(reason, "stop")
        self.finish_reason = _FINISH.get(finish)
        if self.finish_reason == "stop" and self._calls.calls():  # the server's "tool_calls" (or a "stop" after calls)
            self.finish_reason = "tool_calls"
        server = self._server_usage or {}
        prompt_tokens = _int(server.get("prompt_tokens"))
        cached = _int((server.get("prompt_tokens_details") or {}).get("cached_tokens"))
        completion = _int(server.get("completion_tokens"))
        if prompt_tokens is None:
            prompt_tokens = self._tokens.estimate(self._prompt)
        else:
            self._tokens.learn(self._prompt_bytes, prompt_tokens, len(self._body.get("messages", [])))
        ttft = (self._t_first - self._t_start) if self._t_first else 0.0
        self.usage = Usage(
            prompt_tokens=prompt_tokens,
            prompt_eval_tokens=prompt_tokens - (cached or 0),
            completion_tokens=completion if completion is not None else self._chunks,
            ttft=ttft,
            prompt_seconds=ttft,
            decode_seconds=(self._t_last - self._t_first) if self._t_first else 0.0,
            finish_reason=finish,
        )
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _ToolCalls:
    """Streamed `tool_calls` pieces put together. Each call's id and name come in its first piece (OpenAI,
    vLLM, llama-server), or whole in one (Ollama); its arguments are JSON text in fragments. They leave as
    ToolCallDelta events shaped like the local parser's: id and name once, then the arguments."""

    def __init__(self) -> None:
        self._order: list[Any] = []  # the server's indexes, in the order the calls began
        self._ids: dict[Any, str] = {}
        self._names: dict[Any, str] = {}
        self._arguments: dict[Any, list[str]] = {}

    def feed(self, pieces: Any) -> list[Event]:
        events: list[Event] = []
        for n, piece in enumerate(pieces if isinstance(pieces, list) else []):
            if not isinstance(piece, dict):
                continue
            key = piece.get("index", n)
            function = piece.get("function") if isinstance(piece.get("function"), dict) else {}
            name, arguments = function.get("name"), function.get("arguments")
            if not isinstance(arguments, str):  # a server that sends the object itself
                arguments = json.dumps(arguments, ensure_ascii=False) if isinstance(arguments, dict) else ""
            new = key not in self._arguments
            if new:
                self._order.append(key)
                self._arguments[key] = []
                call_id = piece.get("id")
                self._ids[key] = call_id if isinstance(call_id, str) and call_id else new_call_id()
            named = name if isinstance(name, str) and name and key not in self._names else None
            if named is not None:
                self._names[key] = named
            self._arguments[key].append(arguments)
            if new or named is not None or arguments:
                events.append(ToolCallDelta(self._order.index(key), self._ids[key] if new else None, named, arguments))
        return events

    def calls(self) -> tuple[ToolCall, ...]:
        """The calls with a name (a piece without one names no function to run)."""
        return tuple(ToolCall(self._ids[k], self._names[k], "".join(self._arguments[k]) or "{}")
                     for k in self._order if k in self._names)


def _text_of(message: Message) -> str:
    """What a message puts in the prompt besides its role markers: its text and the calls it made."""
    calls = "".join(c.name + c.arguments for c in message.tool_calls)
    return message.content + calls if calls else message.content


def _sampling_body(s: SamplingParams, chat: bool = True) -> dict[str, Any]:
    """The OpenAI fields, plus the llama.cpp/vLLM extensions (top_k, min_p, repetition penalty) that both
    understand; a server that does not ignores unknown fields."""
    body: dict[str, Any] = {
        "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
        "presence_penalty": s.presence_penalty, "frequency_penalty": s.frequency_penalty,
        "top_k": s.top_k, "min_p": s.min_p, "repeat_penalty": s.repeat_penalty,
    }
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if s.reasoning_budget is not None:  # llama-server's per-request thinking budget (localchat serve reads it too)
        body["thinking_budget_tokens"] = s.reasoning_budget
    if s.template_kwargs:  # the thinking switch (llama-server, vLLM and localchat serve read it)
        body["chat_template_kwargs"] = dict(s.template_kwargs)
    if s.tools and chat:  # localchat.tools.ToolRequest.to_openai(): the server renders them and parses the calls
        body.update(s.tools)
    response_format = _response_format(s.grammar) if chat else None
    if response_format is not None:
        body["response_format"] = response_format
    return body


def _response_format(grammar: dict | None) -> dict[str, Any] | None:
    """The sampling's output constraint (localchat.structured.OutputConstraint.to_dict()) as OpenAI's
    `response_format`: the server constrains the reply, llama-server and vLLM with a grammar of their own.
    A tools constraint has no such form: tools go as `tools` (SamplingParams.tools)."""
    if not grammar:
        return None
    if grammar.get("kind") == "json":
        return {"type": "json_object"}
    if grammar.get("kind") == "schema":
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": grammar.get("schema") or {},
                                                       "strict": True}}
    return None


def _context_of(model: dict[str, Any]) -> int | None:
    """The context window a /models entry reports, in the field names the common servers use."""
    candidates = [model.get("max_model_len"), model.get("context_length"), model.get("n_ctx")]
    meta = model.get("meta")
    if isinstance(meta, dict):
        candidates += [meta.get("n_ctx"), meta.get("n_ctx_train")]
    for value in candidates:
        n = _int(value)
        if n and n > 0:
            return n
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_message(data: bytes) -> str:
    try:
        payload = json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace").strip()[:300]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or "")
    if isinstance(error, str):
        return error
    if isinstance(payload, dict) and "detail" in payload:
        return str(payload["detail"])
    return ""
