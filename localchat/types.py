"""Plain value types shared by the catalog, engine, chat, store, TUI and server (stdlib only)."""

from __future__ import annotations

import math

from dataclasses import dataclass, field, asdict
from typing import Literal

from localchat.errors import ConfigError

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made: `arguments` is the JSON text of an object (as OpenAI sends it)."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message that called tools
    tool_call_id: str | None = None  # a `tool` message: the call it answers
    reasoning: str = ""  # an assistant reply's thought, kept apart from its answer (the template decides its fate)

    def to_dict(self) -> dict:
        d: dict = {"role": self.role, "content": self.content}
        if self.reasoning:
            d["reasoning_content"] = self.reasoning  # the field vLLM, llama-server and the Qwen templates read
        if self.tool_calls:
            d["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        return d


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 means greedy (deterministic)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int = 1024
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # A reasoning model's thought may take this many tokens; then the engine closes it and the answer follows
    # (None: no limit; 0: close it at once). Models that do not reason ignore it.
    reasoning_budget: int | None = None
    # What the output must look like (localchat.structured.OutputConstraint.to_dict()); the worker compiles
    # it into a grammar for this request only. None: free text.
    grammar: dict | None = None
    # Where the rendered prompt's messages start (character offsets, ascending), from the chat layer: the
    # engine takes a state checkpoint there, so an edited message or another turn resumes at it (issue 15).
    # Not a sampling setting; it rides here so Engine.generate(prompt, sampling) keeps its signature.
    message_starts: tuple[int, ...] = ()
    # Variables for a chat template the server renders (a remote engine sends them as `chat_template_kwargs`,
    # which llama-server and vLLM read): the thinking switch of a remote reasoning model. Local engines render
    # the template in the parent and ignore it.
    template_kwargs: dict | None = None
    # The functions offered, as OpenAI's body fields (`tools`, `tool_choice`, `parallel_tool_calls`;
    # localchat.tools.ToolRequest.to_openai): for a server that renders the tools and parses the calls
    # itself (a remote engine). Local engines get the tools rendered into the prompt and `grammar`; None there.
    tools: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["message_starts"] = list(self.message_starts)
        return d

    def validate(self) -> "SamplingParams":
        floats = ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")
        for name in floats:  # NaN passes no comparison below by failing them all the wrong way; inf is no setting
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, not {value!r}")
        checks = [
            (self.temperature >= 0, "temperature must be 0 (greedy) or more"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be 0 (off) or more"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repeat_penalty > 0, "repeat_penalty must be positive (1 is off)"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.seed is None or 0 <= self.seed < 2**32, "seed must be in [0, 2^32)"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty text"),
            (self.reasoning_budget is None or (isinstance(self.reasoning_budget, int) and self.reasoning_budget >= 0),
             "reasoning_budget must be a whole number of tokens, 0 or more"),
            (all(type(n) is int and n >= 0 for n in self.message_starts)
             and list(self.message_starts) == sorted(self.message_starts),
             "message_starts must be ascending character offsets"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingParams":
        d = dict(d)
        if "stop" in d:
            d["stop"] = tuple(d["stop"] or ())
        if "message_starts" in d:
            d["message_starts"] = tuple(d["message_starts"] or ())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


GpuLayers = int | Literal["auto"]
MAX_PARALLEL = 64  # replies one worker decodes at once, at most


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model. `auto` values are resolved by the worker and reported back in ModelInfo."""

    n_ctx: int = 4096
    n_gpu_layers: GpuLayers = "auto"
    flash_attn: Literal["auto", "on", "off"] = "auto"
    n_threads: int | None = None  # None: physical cores
    n_batch: int = 512
    kv_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    # Bytes of RAM for sequence-state checkpoints (localchat.engine.checkpoints); None: an eighth of the
    # memory available at load, within [64 MiB, 4 GiB]; 0: none (a hybrid model then re-evaluates a
    # conversation whenever a prompt leaves the cache before its end).
    checkpoint_ram: int | None = None
    # replies decoded together (continuous batching; `localchat serve`); n_ctx is each one's context.
    # "auto": chosen by the worker from the device and memory. 1: the single-stream path (TUI, `run`).
    parallel: int | Literal["auto"] = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "LoadOptions":
        layers_ok = self.n_gpu_layers == "auto" or (
            isinstance(self.n_gpu_layers, int) and not isinstance(self.n_gpu_layers, bool) and self.n_gpu_layers >= -1
        )
        checks = [
            (isinstance(self.n_ctx, int) and 16 <= self.n_ctx <= 1 << 20, "n_ctx must be between 16 and 1048576"),
            (layers_ok, "n_gpu_layers must be 'auto', 0 (CPU only), a number of layers, or -1 (all)"),
            (self.flash_attn in ("auto", "on", "off"), "flash_attn must be auto, on or off"),
            (self.n_threads is None or (isinstance(self.n_threads, int) and self.n_threads >= 1), "n_threads must be 1 or more"),
            (isinstance(self.n_batch, int) and self.n_batch >= 1, "n_batch must be 1 or more"),
            (self.kv_type in ("f16", "q8_0", "q4_0"), "kv_type must be f16, q8_0 or q4_0"),
            (self.checkpoint_ram is None or (isinstance(self.checkpoint_ram, int) and not isinstance(self.checkpoint_ram, bool)
                                             and self.checkpoint_ram >= 0),
             "checkpoint_ram must be a number of bytes (0: no checkpoints), or left out for a default from free memory"),
            (self.parallel == "auto" or (isinstance(self.parallel, int) and not isinstance(self.parallel, bool)
                                         and 1 <= self.parallel <= MAX_PARALLEL),
             f"parallel must be 'auto' or a number of replies from 1 to {MAX_PARALLEL}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "LoadOptions":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class ModelInfo:
    """What the worker reports once a model is loaded: the settings actually in effect."""

    path: str
    architecture: str = ""
    n_ctx: int = 0
    n_ctx_train: int = 0
    n_layer: int = 0
    n_vocab: int = 0
    n_gpu_layers: int = 0
    flash_attn: bool = False
    gpu_offload_supported: bool = False
    chat_template: str | None = None
    bos_token: str | None = None  # text of the BOS/EOS tokens (what a GGUF's Jinja template calls them)
    eos_token: str | None = None
    n_threads: int = 0
    kv_type: str = "f16"
    parallel: int = 1  # replies the worker decodes at once
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # why auto settings resolved as they did
    think_tags: list[int] | None = None  # [<think>, </think>] token ids when both are tokens of their own

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Usage:
    """Counters and timings of one generation, as measured by the worker."""

    prompt_tokens: int = 0  # tokens in the rendered prompt
    prompt_eval_tokens: int = 0  # tokens actually evaluated (prompt_tokens minus the reused KV prefix)
    completion_tokens: int = 0
    ttft: float = 0.0  # seconds from request to first token
    prompt_seconds: float = 0.0  # evaluating the prompt tokens that were not cached
    decode_seconds: float = 0.0  # from the first sampled token to the last
    finish_reason: str = "stop"  # stop | length | cancelled | error
    threads: int = 0  # llama.cpp threads decoding at the end (n_threads auto follows other programs' load)
    reasoning_tokens: int | None = None  # of completion_tokens, how many were thought (reasoning models)

    @property
    def tokens_per_second(self) -> float:
        """Decode rate: (completion_tokens - 1) / decode_seconds.

        decode_seconds runs from the first sampled token to the last one, so it spans completion_tokens - 1
        decode steps; the first token's cost is prompt evaluation (ttft), not decoding. This is the figure
        `scripts/bench engine` compares with a bare llama-cpp-python loop and with llama-bench's tg.
        """
        if self.completion_tokens < 2 or self.decode_seconds <= 0:
            return 0.0
        return (self.completion_tokens - 1) / self.decode_seconds

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_second"] = self.tokens_per_second
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Usage":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Embeddings:
    """One vector per input (L2-normalised) and the tokens they took."""

    vectors: list[list[float]]
    prompt_tokens: int

    def to_dict(self) -> dict:
        return {"vectors": self.vectors, "prompt_tokens": self.prompt_tokens}

    @classmethod
    def from_dict(cls, d: dict) -> "Embeddings":
        return cls(d["vectors"], d["prompt_tokens"])
