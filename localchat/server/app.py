"""The HTTP app: OpenAI-compatible routes, the tutorial-style `POST /`, health; auth and size limits.

`create_app(services, settings)` builds it (the CLI and the tests alike). Model loading goes through the
pool (Services.start_engine), generation through jobs (one thread per running generation).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from localchat import __version__
from localchat.errors import (
    Cancelled, ConfigError, ContextOverflowError, LocalchatError, ModelLoadError, NotInstalledError, TemplateError,
    UnknownModelError,
)
from localchat.server.jobs import Delta, Done, Failed, Job, ServerStats, Thought
from localchat.server.ollama import mount_ollama, ollama_error
from localchat.server.pool import ModelPool
from localchat.server.schema import (
    SSE_DONE, ApiError, GenerationRequest, ResponseBuilder, bad, parse_chat, parse_completion, parse_json,
    parse_tutorial, sse, tutorial_response,
)
from localchat.server.settings import ServerSettings
from localchat.server.thinking import render as render_thinking, thinking_for
from localchat.structured import SchemaError
from localchat.engine.api import ToolCallDelta
from localchat.types import Message, SamplingParams


def create_app(services: Any, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    pool = ModelPool(services, settings.max_models, settings.parallel)
    stats = ServerStats()
    api = _Api(services, settings, pool, stats)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.default_model:
            try:
                async with pool.lease(settings.default_model):
                    pass
            except LocalchatError as exc:
                app.state.startup_error = exc
                raise
        try:
            yield
        finally:
            await pool.close()

    # No /docs: its page loads scripts from a CDN, which an offline machine cannot reach.
    app = FastAPI(title="localchat", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.pool, app.state.stats, app.state.settings, app.state.startup_error = pool, stats, settings, None
    app.state.stop_generations = api.stop_generations
    if settings.api_key:
        app.add_middleware(BearerAuth, api_key=settings.api_key)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None),
                              request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return error_response(to_api_error(exc), request)

    app.add_api_route("/v1/models", api.list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", api.get_model, methods=["GET"])
    app.add_api_route("/v1/chat/completions", api.chat_completions, methods=["POST"])
    app.add_api_route("/v1/completions", api.completions, methods=["POST"])
    app.add_api_route("/v1/embeddings", api.embeddings, methods=["POST"])
    app.add_api_route("/", api.tutorial, methods=["POST"])
    app.add_api_route("/health", api.health, methods=["GET"])
    mount_ollama(app, api)
    return app


class _Api:
    def __init__(self, services: Any, settings: ServerSettings, pool: ModelPool, stats: ServerStats) -> None:
        self.services = services
        self.settings = settings
        self.pool = pool
        self.stats = stats
        self.jobs: set[Job] = set()
        self.stopping = False

    def stop_generations(self) -> None:
        """The server is shutting down: refuse new requests and end the running replies now, so open
        streams close at once instead of holding the shutdown up."""
        self.stopping = True
        for job in list(self.jobs):
            job.cancel()

    def _start(self, model_id: str, prepare) -> Job:
        if self.stopping:
            raise _shutting_down()
        job = Job(self.pool, self.stats, model_id, prepare).start()
        self.jobs.add(job)
        job.on_finished(self.jobs.discard)
        return job

    # --- routes -----------------------------------------------------------------------------------

    async def list_models(self) -> dict:
        return {"object": "list", "data": [self._card(m) for m in self._available()]}

    async def get_model(self, model_id: str) -> dict:
        return self._card(self._resolve(model_id))

    async def health(self) -> dict:
        models = [{"id": s.model_id, "state": s.state, "busy": s.turn.held, "running": s.turn.in_use,
                   "parallel": s.turn.capacity, "queued": s.turn.waiting}
                  for s in self.pool.resident()]
        return {"status": "ok", "version": __version__, "models": models, "max_models": self.pool.max_models,
                "loads": self.pool.loads, "evictions": self.pool.evictions, "generations": self.stats.to_dict()}

    async def chat_completions(self, request: Request) -> Response:
        req = parse_chat(parse_json(await read_body(request, self.settings.max_body_bytes)))
        return await self._generate(request, req, chat=True)

    async def completions(self, request: Request) -> Response:
        req = parse_completion(parse_json(await read_body(request, self.settings.max_body_bytes)))
        return await self._generate(request, req, chat=False)

    async def embeddings(self, request: Request) -> dict:
        from localchat.server.embeddings import openai_embeddings

        return await openai_embeddings(self, request)

    async def tutorial(self, request: Request) -> Response:
        req = parse_tutorial(parse_json(await read_body(request, self.settings.max_body_bytes)))
        model_id = self._resolve(req.model)
        sampling = self._sampling(model_id, req.sampling)
        messages = [*req.history, Message("user", req.prompt)]

        def prepare(slot: Any) -> tuple[Any, SamplingParams]:
            prompt = slot.template.render(messages, add_generation_prompt=True)
            if req.max_length is None:
                return prompt, sampling
            used = slot.engine.count_tokens([prompt])[0]
            if used >= req.max_length:
                raise bad(f"max_length {req.max_length} leaves no room for a reply: the prompt is {used} tokens",
                          "max_length")
            return prompt, replace(sampling, max_tokens=req.max_length - used)

        done = await self._run_to_end(request, self._start(model_id, prepare))
        return JSONResponse(tutorial_response(req, done.text))

    # --- generation -------------------------------------------------------------------------------

    async def _generate(self, request: Request, req: GenerationRequest, chat: bool) -> Response:
        model_id = self._resolve(req.model)
        sampling = self._sampling(model_id, req.sampling)

        thinking = thinking_for(self.services, model_id, req.thinking)

        def prepare(slot: Any) -> tuple:
            if chat:  # thinking as asked, tools rendered, the grammar on the sampling, calls parsed
                return render_thinking(slot, req.messages, thinking, sampling, req.tools, req.response_format)
            return req.prompt, sampling

        job = self._start(model_id, prepare)
        builder = ResponseBuilder(model_id, chat)
        if not req.stream:
            done = await self._run_to_end(request, job)
            return JSONResponse(builder.complete(done.text, done.finish_reason, done.usage, reasoning=done.reasoning,
                                                 tool_calls=done.tool_calls))
        watcher = asyncio.create_task(_watch_disconnect(request, job))
        try:
            first = await job.next()  # wait for the turn and the first text: errors still get a status code
        except BaseException:
            job.cancel()
            watcher.cancel()
            raise
        if isinstance(first, Failed):
            watcher.cancel()
            raise to_api_error(first.error)
        return StreamingResponse(_stream(job, first, builder, watcher, req.include_usage),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _run_to_end(self, request: Request, job: Job) -> Done:
        watcher = asyncio.create_task(_watch_disconnect(request, job))
        try:
            while True:
                event = await job.next()
                if isinstance(event, Done):
                    if event.finish_reason == "cancelled":  # by the shutdown (a gone client reads nothing)
                        raise _shutting_down()
                    return event
                if isinstance(event, Failed):
                    raise to_api_error(event.error)
        finally:
            watcher.cancel()
            job.cancel()

    # --- models -----------------------------------------------------------------------------------

    def _available(self) -> list[str]:
        return [m for m in self.services.installed_ids() if not self.services.entry(m).is_remote]

    def _resolve(self, requested: str | None) -> str:
        model_id = requested or self.settings.default_model
        if model_id is None:
            resident = self.pool.resident()
            model_id = resident[-1].model_id if resident else self.services.default_model_id()
        if model_id is not None and self.pool.get(model_id) is not None:
            return model_id
        available = self._available()
        if model_id in available:
            return model_id
        listing = ", ".join(available) or "none (install one with `localchat pull ID`)"
        if model_id is None:
            raise ApiError(404, f"no model was named and none is installed; available: {listing}",
                           param="model", code="model_not_found", extra={"available": available})
        why = "is not installed here"
        if model_id in self.services.catalog:
            if self.services.entry(model_id).is_remote:
                why = "is a remote engine; this server serves its local models only"
        else:
            why = "does not exist"
        raise ApiError(404, f"the model '{model_id}' {why}; available: {listing}", param="model",
                       code="model_not_found", extra={"available": available})

    def _card(self, model_id: str) -> dict:
        entry = self.services.entry(model_id)
        rec = self.services.registry.get(model_id)
        slot = self.pool.get(model_id)
        if slot is not None and slot.engine is not None:
            n_ctx = slot.engine.info.n_ctx
        else:
            n_ctx = self.services.config.load_options_for(model_id).n_ctx
            if entry.context:
                n_ctx = min(n_ctx, entry.context)
        return {"id": model_id, "object": "model", "created": int(rec.installed_at) if rec else 0,
                "owned_by": "localchat", "name": entry.name, "max_model_len": n_ctx, "loaded": slot is not None}

    def _sampling(self, model_id: str, overrides: dict) -> SamplingParams:
        try:
            return self.services.config.sampling_for(model_id, **overrides).validate()
        except ConfigError as exc:
            raise bad(exc.message) from None


# --- streaming, disconnects ----------------------------------------------------------------------


async def _stream(job: Job, first: Any, builder: ResponseBuilder, watcher: asyncio.Task,
                  include_usage: bool) -> AsyncIterator[bytes]:
    try:
        if builder.chat:
            yield builder.chunk("", first=True)
        event = first
        while True:
            if isinstance(event, Delta):
                yield builder.chunk(event.text)
            elif isinstance(event, Thought):
                if builder.chat:  # a text completion is the raw text: the prompt's template never split it
                    yield builder.chunk(reasoning=event.text)
            elif isinstance(event, ToolCallDelta):
                yield builder.chunk(tool_call=event)
            elif isinstance(event, Done) and event.finish_reason == "cancelled":
                yield sse(_shutting_down().body())  # ended by the shutdown: say so rather than "stop"
                return
            elif isinstance(event, Done):
                yield builder.chunk(None, reason=event.finish_reason, usage=event.usage)
                if include_usage:
                    yield builder.chunk(usage=event.usage, usage_only=True)
                yield SSE_DONE
                return
            else:  # failed after the reply had started: an error event, as OpenAI's stream carries one
                yield sse(to_api_error(event.error).body())
                return
            event = await job.next()
    finally:  # also when the client went away and the server cancelled this iterator
        watcher.cancel()
        job.cancel()


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Cancel the job the moment the client goes away (queued, or mid-generation)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancel()
            return


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `limit` (before reading all of it)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise bad("invalid Content-Length header") from None
        if declared > limit:
            raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", type="server_error", code="server_shutdown")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than the server accepts ({limit} bytes)",
                    code="request_too_large")


# --- errors and auth -----------------------------------------------------------------------------


def to_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SchemaError):
        return ApiError(400, str(exc), param=exc.param or "response_format", code="invalid_schema")
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, (ConfigError, TemplateError)):
        return bad(str(exc))
    if isinstance(exc, (UnknownModelError, NotInstalledError)):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, Cancelled):
        return ApiError(499, str(exc), code="client_closed_request")
    if isinstance(exc, ModelLoadError):
        return ApiError(500, str(exc), type="server_error", code="model_load_failed")
    if isinstance(exc, LocalchatError):
        return ApiError(500, str(exc), type="server_error", code="engine_error")
    return ApiError(500, f"internal error: {type(exc).__name__}", type="server_error")


def error_response(error: ApiError, request: Request | None = None) -> Response:
    if request is not None and request.url.path.startswith("/api/"):
        return ollama_error(error)
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


class BearerAuth:
    """Every request needs `Authorization: Bearer KEY`, compared in constant time. Pure ASGI (no
    per-response wrapping), so it costs nothing on streamed replies."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            error = ApiError(401, "a valid API key is required: send `Authorization: Bearer KEY`",
                             code="invalid_api_key")
            body = json.dumps(error.body()).encode("utf-8")
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: dict) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False
