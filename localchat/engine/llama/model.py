"""One loaded model and its decode loop, through llama-cpp-python's low-level bindings (imported by
localchat.engine.llama.bindings). It runs inside the worker process (localchat.engine.worker).

The decode loop is deliberately small: per token one `llama_decode` on a preallocated one-token batch,
one pick (numpy's argmax of the logits for plain greedy decoding, else `llama_sampler_sample` on a native
sampler chain), a list lookup for the token's cached bytes and an incremental UTF-8 decode, done while the
GPU (if any) computes the next step. Everything else (batching deltas, the pipe) happens outside it.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from localchat.engine.llama import bindings, ggml
from localchat.engine.checkpoints import (CheckpointKey, CheckpointRejected, CheckpointStore, default_budget,
                                          model_identity, read_checkpoint, settings_fingerprint, token_offsets,
                                          write_checkpoint)
from localchat.engine.llama.sequence import SequenceCache, memory_kind
from localchat.engine.offload import OffloadPlan, plan_offload as _plan_offload
from localchat.engine.threads import CHECK_SECONDS, FIRST_CHECK_SECONDS, ThreadGovernor
from localchat.errors import EngineContextOverflow, EngineError, ModelLoadError
from localchat.reasoning import ReasoningFormat, ThoughtControl, detect
from localchat.types import LoadOptions, SamplingParams

_KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}  # ggml_type values of the KV cache
_FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}  # enum llama_flash_attn_type
CPU_KQ_LIMIT = 512 * 2**20  # bytes of attention scores a prompt batch may take without flash attention on a CPU
_EOG = object()  # marks an end-of-generation token in the piece cache


def physical_cores() -> int:
    """Physical cores usable by this process (hyperthreads don't speed up decoding); llama-bench does the same."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def plan_offload(requested: int | str, offload_supported: bool, **sizing) -> OffloadPlan:
    """localchat.engine.offload.plan_offload with the request first; without `info` and `free_vram_bytes`
    in `sizing`, "auto" means every layer where the build can offload."""
    return _plan_offload(sizing.pop("info", None), sizing.pop("n_ctx", 4096), sizing.pop("kv_type", "f16"),
                         sizing.pop("free_vram_bytes", None), requested=requested, offload_supported=offload_supported,
                         **sizing)


class NativeModel:
    """One loaded model with its context, KV-cache bookkeeping and decode loop."""

    def __init__(self, path: str | Path, options: LoadOptions) -> None:
        self.lib = lib = bindings.load()
        self.path = Path(path)
        self.options = options
        self.model = self.ctx = None
        self._embedder: Any = None  # the EmbeddingContext, made on the first embed()
        self._allowed_memo: Any = None  # grammar.AllowedMemo, made with the first grammar
        self.notes: list[str] = []
        started = time.perf_counter()
        _check_is_gguf(self.path)
        self._load_model()
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_layer = lib.llama_model_n_layer(self.model)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self.model)
        self.n_gpu_layers = self.n_layer + 1 if self._offload < 0 else min(self._offload, self.n_layer + 1)
        self.n_threads = options.n_threads or physical_cores()
        self._governor = ThreadGovernor(self.n_threads) if options.n_threads is None else None
        self._threads_now = self.n_threads
        if self._governor is not None and self._governor.enabled:
            self.notes.append(f"threads auto: up to {self.n_threads} (the physical cores), fewer while other programs "
                              "keep CPUs busy: llama.cpp's threads stall when they share a core")
        self.parallel = self._plan_parallel()
        self._new_context()
        # each reply's context (a split cache's streams are rounded up to 256 cells)
        self.n_ctx = lib.llama_n_ctx_seq(self.ctx) if self.kv_split else lib.llama_n_ctx(self.ctx) // self.parallel
        self.mem = lib.llama_get_memory(self.ctx)
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self.bos = lib.llama_vocab_bos(self.vocab)
        self.eos = lib.llama_vocab_eos(self.vocab)
        self.add_eos = bool(lib.llama_vocab_get_add_eos(self.vocab))
        self.load_seconds = time.perf_counter() - started

        # The tokens whose state sits in the cache (sequence 0), and the checkpoints that let a prompt
        # leaving them before their end resume at its last save point (hybrid models cannot cut back).
        budget = options.checkpoint_ram if options.checkpoint_ram is not None else default_budget()
        self.sequence = SequenceCache(lib, self.ctx, memory_kind(lib, self.model, swa_full=True), CheckpointStore(budget))
        self.cached: list[int] = self.sequence.cached  # the same list: the decode loop appends to it
        self.last_usage: dict = {}
        self._identity: str | None = None  # model_identity() of the file, read when a state goes to disk
        self._pieces: list = [None] * self.n_vocab  # token -> bytes, or _EOG
        self._piece_buf = ctypes.create_string_buffer(256)
        self._one = (ctypes.c_int32 * 1)()
        self._one_batch = lib.llama_batch_get_one(self._one, 1)
        self.think = self._think_tokens()

    def _load_model(self) -> None:
        lib, notes = self.lib, self.notes
        mark = bindings.log_mark()
        offload = self._plan_offload()
        notes.append(offload.note)
        amx_note = bindings.amx_note()
        if amx_note:
            notes.append(amx_note)
        self._offload = offload.n_gpu_layers
        params = lib.llama_model_default_params()
        params.n_gpu_layers = offload.n_gpu_layers
        self.model = lib.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.model:
            raise ModelLoadError(
                f"llama.cpp could not load {self.path.name}: " + bindings.load_reason(mark),
                "the file may be damaged or made for a newer llama.cpp; check it with `localchat verify`",
            )

    def _plan_offload(self) -> OffloadPlan:
        """n_gpu_layers for this model: "auto" is sized from the GGUF header and the GPUs' free memory."""
        options, supported = self.options, bool(self.lib.llama_supports_gpu_offload())
        if options.n_gpu_layers != "auto" or not supported:
            return plan_offload(options.n_gpu_layers, supported)
        from localchat.errors import GGUFError
        from localchat.gguf import read_gguf

        try:
            info = read_gguf(self.path)
        except (GGUFError, OSError):
            info = None  # llama.cpp's own loader will say what is wrong with the file
        gpus = [d for d in ggml.devices(self.lib._lib) if d["type"] in ("GPU", "iGPU")]
        free = sum(d["free_bytes"] for d in gpus) if gpus else 0
        n_ctx = options.n_ctx or (info.context_length if info else None) or 4096
        if info is not None and info.context_length:
            n_ctx = min(n_ctx, info.context_length)
        return plan_offload("auto", True, info=info, n_ctx=n_ctx, kv_type=options.kv_type, free_vram_bytes=free,
                            flash_attn=options.flash_attn, n_ubatch=min(options.n_batch, 512))

    def _new_context(self) -> None:
        lib, options = self.lib, self.options
        n_ctx = options.n_ctx or self.n_ctx_train
        if self.n_ctx_train and n_ctx > self.n_ctx_train:
            self.notes.append(f"n_ctx {n_ctx} is more than the model was trained for; using {self.n_ctx_train}")
            n_ctx = self.n_ctx_train
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = options.n_batch
        params.n_ubatch = min(options.n_batch, 512)
        # parallel > 1 (continuous batching, localchat.engine.batch): one sequence per slot. An attention-only
        # model gets a KV stream per slot, so each reply attends over its own tokens, not every slot's
        # (measured, 0.5B, 8 slots holding 150 tokens each, 2 threads: a step of 8 replies 141 ms split,
        # 176 ms unified; one reply beside 7 idle caches 10% slower unified). A hybrid model keeps one unified
        # cache: its slots resume from per-sequence checkpoints, and few of its layers attend.
        params.n_seq_max = self.parallel
        self.kv_split = self.parallel > 1 and memory_kind(lib, self.model, swa_full=True).can_cut
        params.kv_unified = self.parallel > 1 and not self.kv_split
        if self.parallel > 1:
            self.notes.append(f"parallel {self.parallel}: " + ("a KV cache per reply" if self.kv_split else
                              "one KV cache for all replies (a hybrid model's slots resume from checkpoints)"))
        n_ctx *= self.parallel
        params.n_ctx = n_ctx
        params.n_threads = params.n_threads_batch = self.n_threads
        params.flash_attn_type = _FLASH_ATTN[options.flash_attn]
        cpu_note = self._cpu_flash_attn_off(n_ctx, params.n_ubatch)
        if cpu_note:
            params.flash_attn_type = _FLASH_ATTN["off"]
        params.type_k = params.type_v = _KV_TYPES[options.kv_type]
        if options.kv_type != "f16":
            if options.flash_attn == "off":
                # llama.cpp refuses a quantized V cache without flash attention; K can stay quantized.
                params.type_v = _KV_TYPES["f16"]
                self.notes.append(f"kv_type {options.kv_type}: K cache {options.kv_type}, V cache f16 (a quantized V "
                                  "cache needs flash attention, which is off; set flash_attn auto or on)")
            else:
                self.notes.append(f"kv_type {options.kv_type}: K and V caches {options.kv_type} (a quantized V cache "
                                  f"needs flash attention; flash_attn {options.flash_attn})")
        params.no_perf = False  # llama.cpp's own decode counters: the benchmark compares against them
        mark = bindings.log_mark()
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            reason = bindings.load_reason(mark)
            self.close()
            hint = "lower n_ctx, or pick a smaller model"
            if options.kv_type != "f16" and options.flash_attn == "off":
                hint = f"kv_type {options.kv_type} needs flash attention: set flash_attn to auto or on"
            raise ModelLoadError(f"llama.cpp could not create a context for {self.path.name}: {reason}", hint)
        if cpu_note:
            self.notes.append(cpu_note)
            self.flash_attn = False
        else:
            self.flash_attn = _flash_attn_in_effect(options.flash_attn, bindings.log_since(mark), self.notes)

    def _plan_parallel(self) -> int:
        requested = self.options.parallel
        if requested != "auto":
            return int(requested)
        from localchat.engine.batch import auto_parallel

        lib = self.lib
        on_gpu = self._offload != 0 and bool(lib.llama_supports_gpu_offload())
        if on_gpu:
            free = sum(d["free_bytes"] for d in ggml.devices(lib._lib) if d["type"] in ("GPU", "iGPU"))
        else:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        # an upper bound per token (K and V of every layer at the full embedding width, f16)
        kv_per_token = self.n_layer * 2 * lib.llama_model_n_embd(self.model) * 2
        n, note = auto_parallel(on_gpu, free, kv_per_token, self.options.n_ctx or self.n_ctx_train)
        self.notes.append(note)
        return n

    # -- continuous batching: what engine.llama.sequences.LlamaSequences uses ------------------------

    def piece_bytes(self, token: int) -> bytes | None:
        piece = self._pieces[token]
        if piece is None:
            piece = self._piece(token)
        return None if piece is _EOG else piece

    def grammar_sampler(self, s: SamplingParams):
        """The compiled grammar of a request that constrains its output (raises SchemaError when the schema
        cannot become a grammar). Only reads the vocabulary: safe beside a running decode."""
        from localchat.engine.llama.grammar import AllowedMemo, GrammarSampler
        from localchat.structured import OutputConstraint

        assert s.grammar is not None
        if self._allowed_memo is None:
            self._allowed_memo = AllowedMemo()
        return GrammarSampler(self.lib, self.vocab, self.n_vocab, OutputConstraint.from_dict(s.grammar),
                              need=self._grammar_need(s), memo=self._allowed_memo)

    def _grammar_need(self, s: SamplingParams) -> int | None:
        """How many allowed tokens among the best few make a refused pick exact (GrammarSampler): plain greedy
        takes the best allowed one; a chain that starts with top_k (see _sampler) sees only top_k."""
        if self._plain_greedy(s):
            return 1
        return s.top_k if s.top_k > 0 else None

    def sampler_chain(self, s: SamplingParams):
        return self._sampler(s)

    def plain_greedy(self, s: SamplingParams) -> bool:
        return self._plain_greedy(s)

    def _cpu_flash_attn_off(self, n_ctx: int, n_ubatch: int) -> str | None:
        """flash_attn auto for a model that runs wholly on the CPU: off, with the note saying why, unless it is
        needed. llama.cpp's CPU flash-attention kernel is fast from an empty cache but slow at depth: one
        decoded token at 700 / 2,000 tokens of context took 1.9x / 2.5x as long as without it for SmolLM2 and
        1.24x / 1.6x for Qwen2.5-Coder-0.5B (llama-bench, 2 threads, AMX), and a chat decodes at depth. It is
        needed for a quantized V cache, and without it a prompt batch's attention scores take
        n_ctx x n_ubatch x n_head floats, so it stays on where those would pass CPU_KQ_LIMIT."""
        if self.options.flash_attn != "auto" or self._offload != 0 or self.options.kv_type != "f16":
            return None
        n_head = self.lib.llama_model_n_head(self.model)
        scores = n_ctx * n_ubatch * max(n_head, 1) * 4
        if scores > CPU_KQ_LIMIT:
            return None
        return ("flash attention auto: off (the model runs on the CPU, where llama.cpp's flash attention decodes "
                "1.2-2.5x slower once the conversation is a few hundred tokens long; flash_attn on forces it)")

    # -- metadata --------------------------------------------------------------------------------

    def info(self) -> dict:
        """ModelInfo fields (without `path`, which the parent knows)."""
        lib = self.lib
        template = lib.llama_model_chat_template(self.model, None)
        return {
            "architecture": self.meta("general.architecture") or "",
            "n_ctx": self.n_ctx,
            "n_ctx_train": self.n_ctx_train,
            "n_layer": self.n_layer,
            "n_vocab": self.n_vocab,
            "n_gpu_layers": self.n_gpu_layers,
            "flash_attn": self.flash_attn,
            "gpu_offload_supported": bool(lib.llama_supports_gpu_offload()),
            "chat_template": template.decode("utf-8", "replace") if template else None,
            "bos_token": self._token_text(self.bos),
            "eos_token": self._token_text(self.eos),
            "n_threads": self.n_threads,
            "kv_type": self.options.kv_type,
            "parallel": self.parallel,
            "load_seconds": self.load_seconds,
            "notes": list(self.notes),
            "think_tags": [self.think.open_id, self.think.close_id] if self.think else None,
        }

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1024)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def _token_text(self, token: int) -> str | None:
        if token < 0:
            return None
        text = self.lib.llama_vocab_get_text(self.vocab, token)
        return text.decode("utf-8", "replace") if text is not None else None

    # -- tokens ----------------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]:
        """Tokens of `text` with special tokens (<|im_start|>) parsed; BOS only where the model wants one
        (never with bos=False: a piece of text inside a prompt)."""
        data = text.encode("utf-8", "replace")
        n_max = len(data) + 2
        buf = (ctypes.c_int32 * n_max)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, special)
        if n < 0:
            n_max = -n
            buf = (ctypes.c_int32 * n_max)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, special)
            if n < 0:
                raise EngineError(f"could not tokenize a text of {len(data)} bytes")
        tokens = buf[:n]
        if bos and self.add_bos and self.bos >= 0 and (not tokens or tokens[0] != self.bos):
            tokens.insert(0, self.bos)  # the rendered template may already start with the BOS text
        return tokens

    def embed_tokens(self, text: str) -> list[int]:
        """Tokens of an embedding input: user text (special tokens not parsed), with the BOS and EOS the
        model's tokenizer adds (Qwen3-Embedding pools the last token, the EOS)."""
        tokens = self.tokenize(text, special=False)
        if tokens and self.add_eos and self.eos >= 0:
            tokens.append(self.eos)
        return tokens

    def embed(self, texts: list[str], truncate: bool):
        """localchat.types.Embeddings of texts (engine.llama.embedding); safe beside a running decode."""
        if self._embedder is None:
            from localchat.engine.llama.embedding import MAX_WINDOW, EmbeddingContext

            window = min(self.n_ctx, self.n_ctx_train or self.n_ctx, MAX_WINDOW)
            self._embedder = EmbeddingContext(self.lib, self.model, window, self.n_threads, self.embed_tokens)
        return self._embedder.embed(texts, truncate)

    def _piece(self, token: int):
        """Bytes of a token (special tokens render as nothing), or _EOG; cached per token."""
        lib = self.lib
        if lib.llama_vocab_is_eog(self.vocab, token):
            piece = _EOG
        else:
            buf = self._piece_buf
            n = lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            piece = buf.raw[:n]
        self._pieces[token] = piece
        return piece

    # -- reasoning models --------------------------------------------------------------------------

    def _think_tokens(self) -> "_ThinkTokens | None":
        """The thought's tags as token ids, for a model that reasons (localchat.reasoning.detect) and has both
        tags as tokens of their own; None otherwise (then no budget or end-now: the decode loop is unchanged)."""
        raw = self.lib.llama_model_chat_template(self.model, None)
        template = raw.decode("utf-8", "replace") if raw else None
        fmt = detect(template, lambda tag: len(self.tokenize(tag, bos=False)) == 1)
        if fmt is None:
            return None
        open_ids, close_ids = self.tokenize(fmt.open_tag, bos=False), self.tokenize(fmt.close_tag, bos=False)
        if len(open_ids) != 1 or len(close_ids) != 1:
            return None
        # What a Qwen template writes to close a thought: "\n</think>\n\n"; the answer follows it.
        return _ThinkTokens(fmt, open_ids[0], close_ids[0], self.tokenize(f"\n{fmt.close_tag}\n\n", bos=False))

    def thought_control(self, prompt: str, sampling: SamplingParams, prompt_tokens: int) -> ThoughtControl | None:
        """The budget and end-now of one reply of a reasoning model (None for any other model).

        The thought may take `sampling.reasoning_budget` tokens, and never so many that the answer is left
        without room: at most the reply's allowance (max_tokens, or what the context has left) less the
        closing tags and a quarter of the allowance, which is kept for the answer."""
        think = self.think
        if think is None:
            return None
        allowance = min(sampling.max_tokens if sampling.max_tokens > 0 else self.n_ctx, self.n_ctx - prompt_tokens)
        cap = max(0, allowance - len(think.close_tokens) - max(1, allowance // 4))
        budget = cap if sampling.reasoning_budget is None else min(sampling.reasoning_budget, cap)
        return ThoughtControl(think.open_id, think.close_id, think.close_tokens,
                              in_thought=think.fmt.opens_in_thought(prompt), budget=budget)

    def message_tokens(self, prompt: str, tokens: list[int], starts: tuple[int, ...]) -> list[int]:
        """The chat layer's message starts (character offsets of `prompt`) as token counts of `tokens`."""
        if not starts:
            return []
        data = prompt.encode("utf-8", "replace")
        offsets = [len(prompt[:c].encode("utf-8", "replace")) for c in starts]
        lengths = [self._special_piece_len(t) for t in tokens]
        if self.add_bos and tokens and tokens[0] == self.bos and sum(lengths) != len(data):
            lengths[0] = 0  # the BOS tokenize() put in front: not part of the text
        if sum(lengths) == len(data):
            return token_offsets(lengths, offsets)
        # A tokenizer whose pieces do not spell the text back (SentencePiece's leading space): tokenize each
        # prefix and keep what it shares with the prompt's tokens.
        out = []
        for c in starts:
            head = self.tokenize(prompt[:c]) if c else []
            n = 0
            while n < min(len(head), len(tokens)) and head[n] == tokens[n]:
                n += 1
            out.append(n)
        return out

    def _special_piece_len(self, token: int) -> int:
        buf = self._piece_buf
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return -n if n < 0 else n

    # -- state on disk (a conversation left in the sidebar, reopened later) ---------------------------

    def checkpoint_key(self, template: str) -> CheckpointKey:
        """What a saved state is valid for: this model file, the template, and the settings that shape it."""
        if self._identity is None:
            self._identity = model_identity(self.path)
        import llama_cpp

        o = self.options
        settings = settings_fingerprint(n_ctx=self.n_ctx, kv_type=o.kv_type, flash_attn=self.flash_attn,
                                        n_gpu_layers=self.n_gpu_layers, parallel=self.parallel,
                                        llama_cpp=getattr(llama_cpp, "__version__", "?"))
        return CheckpointKey(self._identity, template, settings)

    def save_prefix(self, text: str, path: str | Path, template: str) -> int:
        """Write the state after the longest prefix of `text`'s tokens this model holds (its cache or a
        checkpoint) to `path`; the number of tokens it covers (0: none held, nothing written)."""
        ckpt = self.sequence.full_for(self.tokenize(text))
        if ckpt is None:
            return 0
        write_checkpoint(path, self.checkpoint_key(template), ckpt)
        return ckpt.n_tokens

    def load_file(self, path: str | Path, template: str) -> int:
        """Offer a saved state to the next prompts (it is used where a prompt starts with its tokens);
        CheckpointRejected if it is truncated, corrupt, or from another model file, template or settings."""
        ckpt = read_checkpoint(path, self.checkpoint_key(template), self.sequence.seq_id)
        if ckpt.partial:
            raise CheckpointRejected(f"checkpoint {Path(path).name} holds a partial state, which cannot be restored")
        if not self.sequence.store.put(ckpt):
            raise CheckpointRejected(f"checkpoint {Path(path).name} is larger than the checkpoint RAM budget")
        return ckpt.n_tokens

    # -- generation ------------------------------------------------------------------------------

    def _sampler(self, s: SamplingParams):
        """A native sampler chain. top_k runs before the penalties so they never scan the whole vocabulary
        (llama.cpp's own advice); with temperature <= 0 the pick is greedy (argmax)."""
        lib = self.lib
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lib.llama_sampler_chain_init(params)
        add = lib.llama_sampler_chain_add
        penalties = s.repeat_penalty != 1.0 or s.presence_penalty != 0.0 or s.frequency_penalty != 0.0
        greedy = s.temperature <= 0
        if s.top_k > 0 and (penalties or not greedy):
            add(chain, lib.llama_sampler_init_top_k(s.top_k))
        if penalties:
            add(chain, lib.llama_sampler_init_penalties(
                self.n_vocab, s.repeat_last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty))
        if greedy:
            add(chain, lib.llama_sampler_init_greedy())
        else:
            if 0.0 < s.top_p < 1.0:
                add(chain, lib.llama_sampler_init_top_p(s.top_p, 1))
            if s.min_p > 0.0:
                add(chain, lib.llama_sampler_init_min_p(s.min_p, 1))
            add(chain, lib.llama_sampler_init_temp(s.temperature))
            seed = 0xFFFFFFFF if s.seed is None else s.seed & 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: random
            add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    @staticmethod
    def _plain_greedy(s: SamplingParams) -> bool:
        return s.temperature <= 0 and s.repeat_penalty == 1.0 and s.presence_penalty == 0.0 and s.frequency_penalty == 0.0

    def _argmax_sampler(self):
        """Greedy pick straight from the logits. llama_sampler_sample first copies every logit into a
        token-data array (152k entries for Qwen): about 0.6 ms a token, a third of the decode time of a
        0.5B model on an H100. numpy's argmax over the same floats takes a few microseconds and picks the
        same token (the first maximum, like llama.cpp's greedy sampler)."""
        import numpy as np  # llama-cpp-python depends on it

        logits_ith, n_vocab, as_array = self.lib.llama_get_logits_ith, self.n_vocab, np.ctypeslib.as_array

        def sample(_chain, ctx, i):
            return int(as_array(logits_ith(ctx, i), shape=(n_vocab,)).argmax())

        return sample

    def _eval_prompt(self, tokens: list[int], start: int, cancelled, save_at: tuple[int, ...] = ()) -> bool:
        """Decode tokens[start:] in n_batch chunks, split at the save points (a checkpoint is taken after
        each); False if cancelled in between."""
        lib = self.lib
        n = len(tokens)
        arr = (ctypes.c_int32 * n)(*tokens)
        step = self.options.n_batch
        i = start
        while i < n:
            if cancelled():
                return False
            count = min(step, n - i)
            count = min([count] + [s - i for s in save_at if i < s < i + count])
            batch = lib.llama_batch_get_one(ctypes.cast(ctypes.byref(arr, i * 4), ctypes.POINTER(ctypes.c_int32)), count)
            self._check_decode(lib.llama_decode(self.ctx, batch))
            self.cached.extend(tokens[i:i + count])
            i += count
            if i in save_at:
                self.sequence.checkpoint()
        return True

    def _check_decode(self, rc: int) -> None:
        if rc == 0:
            return
        self.lib.llama_memory_clear(self.mem, True)
        self.sequence.clear()
        if rc == 1:
            raise EngineContextOverflow(f"the context window ({self.n_ctx} tokens) is full", "start a new conversation or raise n_ctx")
        raise EngineError(f"llama_decode failed with code {rc}", "see the engine log")

    def generate(self, prompt: str, sampling: SamplingParams, cancelled,
                 end_thought: Callable[[], bool] | None = None) -> Iterator[str]:
        """Stream the reply to a rendered prompt as text pieces; `last_usage` holds the counters after it.

        `cancelled()` is polled once per token (and between prompt chunks); so is `end_thought()` while a
        reasoning model thinks (True: close the thought now, the answer follows).
        """
        lib = self.lib
        t_request = time.perf_counter()
        tokens = self.tokenize(prompt)
        if not tokens:
            raise EngineError("the prompt is empty", "render at least one message before generating")
        if len(tokens) >= self.n_ctx:
            raise EngineContextOverflow(
                f"the prompt has {len(tokens)} tokens; the context window holds {self.n_ctx}",
                "drop older turns or load the model with a larger n_ctx",
            )
        plan = self.sequence.prepare(tokens, self.message_tokens(prompt, tokens, sampling.message_starts))
        keep = plan.keep
        usage = {"prompt_tokens": len(tokens), "prompt_eval_tokens": len(tokens) - keep, "completion_tokens": 0,
                 "ttft": 0.0, "prompt_seconds": 0.0, "decode_seconds": 0.0, "finish_reason": "cancelled"}
        self.last_usage = usage
        governor = self._governor
        if governor is not None:
            # Judge only windows in which this worker decodes: between replies the machine may have been busy
            # with something that has ended (another model's worker, the user's build), so a reply starts with
            # the last choice, and the load is measured from here.
            governor.mark()
        t_prompt = time.perf_counter()
        evaluated = self._eval_prompt(tokens, keep, cancelled, plan.save_at)
        usage["prompt_seconds"] = time.perf_counter() - t_prompt  # llama_decode of the new prompt tokens
        if not evaluated:
            return

        stops = tuple(s for s in sampling.stop if s)
        max_tokens = sampling.max_tokens if sampling.max_tokens > 0 else self.n_ctx
        chain = self._sampler(sampling)
        grammar = None
        try:
            if sampling.grammar is not None:  # tools / JSON: this request's picks follow the grammar
                grammar = self.grammar_sampler(sampling)
            # Locals: this loop runs once per token and must cost next to nothing beside llama_decode.
            decode, sample, ctx, batch, one = lib.llama_decode, lib.llama_sampler_sample, self.ctx, self._one_batch, self._one
            if grammar is not None:
                sample = grammar.sample
            elif self._plain_greedy(sampling):
                sample = self._argmax_sampler()
            thought = self.thought_control(prompt, sampling, len(tokens))
            if thought is not None:  # only a reasoning model pays for the check per token
                accept = grammar.accept if grammar is not None else lib.llama_sampler_accept
                sample = _controlled(sample, thought, accept, end_thought)
            pieces, piece_of, cached, n_ctx = self._pieces, self._piece, self.cached, self.n_ctx
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            utf8 = decoder.decode
            now = time.perf_counter
            pending = ""  # text held back because it may be the start of a stop string
            n_gen = 0
            finish = "length"
            stopped_by_string = False

            token = sample(chain, ctx, -1)
            t_first = t_last = now()
            usage["ttft"] = t_first - t_request
            next_check = t_first + FIRST_CHECK_SECONDS if governor is not None else float("inf")
            while True:
                piece = pieces[token]
                if piece is None:
                    piece = piece_of(token)
                if piece is _EOG:
                    finish = "stop"
                    break
                n_gen += 1
                t_last = now()
                if t_last >= next_check:  # other programs' load changes: decode with the cores they leave
                    self._set_threads(governor.choose(FIRST_CHECK_SECONDS))
                    next_check = t_last + CHECK_SECONDS
                last = n_gen >= max_tokens or len(cached) >= n_ctx
                if not last and cancelled():
                    finish = "cancelled"  # this token's text still goes out: it was generated
                    last = True
                if not last:
                    # Start the next decode before handling this token's text: on a GPU llama_decode
                    # returns once the work is queued, so the Python below runs while the GPU computes,
                    # and the sampler's read of the logits waits for it.
                    one[0] = token
                    rc = decode(ctx, batch)
                    if rc:
                        self._check_decode(rc)
                    cached.append(token)
                text = utf8(piece)
                if text:
                    if stops:
                        pending += text
                        cut = _find_stop(pending, stops)
                        if cut >= 0:
                            pending = pending[:cut]
                            finish = "stop"
                            stopped_by_string = True
                            break
                        hold = _stop_prefix_len(pending, stops)
                        if hold < len(pending):
                            yield pending[:len(pending) - hold]
                            pending = pending[len(pending) - hold:]
                    else:
                        yield text
                if last:
                    break
                token = sample(chain, ctx, -1)
            if finish == "stop" and not stopped_by_string:
                # The model ended: bytes it left unfinished are invalid UTF-8 and show as U+FFFD. (After
                # max_tokens or a cancel an unfinished character is simply cut, not shown broken.)
                pending += decoder.decode(b"", final=True)
                cut = _find_stop(pending, stops) if stops else -1
                if cut >= 0:
                    pending = pending[:cut]
            if pending:
                yield pending  # text held back for a stop string that never came, or before the one that did
            usage["completion_tokens"] = n_gen
            usage["decode_seconds"] = t_last - t_first
            usage["threads"] = self._threads_now
            usage["finish_reason"] = finish
            if thought is not None:
                usage["reasoning_tokens"] = thought.thought_tokens
        finally:
            if grammar is not None:
                grammar.free()
            lib.llama_sampler_free(chain)

    def _set_threads(self, n: int) -> None:
        if n != self._threads_now:
            self.lib.llama_set_n_threads(self.ctx, n, n)
            self._threads_now = n

    def perf(self) -> dict:
        """llama.cpp's own counters: time spent in prompt eval and in token decode (native rate)."""
        data = self.lib.llama_perf_context(self.ctx)
        return {"prompt_ms": data.t_p_eval_ms, "prompt_tokens": data.n_p_eval,
                "eval_ms": data.t_eval_ms, "eval_tokens": data.n_eval}

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None


class _ThinkTokens:
    """A reasoning model's tags as token ids, and the tokens that close its thought."""

    __slots__ = ("fmt", "open_id", "close_id", "close_tokens")

    def __init__(self, fmt: ReasoningFormat, open_id: int, close_id: int, close_tokens: list[int]) -> None:
        self.fmt, self.open_id, self.close_id, self.close_tokens = fmt, open_id, close_id, close_tokens


def _controlled(sample, thought: ThoughtControl, accept, end_thought: Callable[[], bool] | None):
    """A pick that feeds the thought's closing tokens instead of sampling once the budget is spent or the
    user asked (the sampler chain, and a grammar, still hear of them: penalties count them, and a grammar
    held until `</think>` starts after it)."""

    def pick(chain, ctx, i):
        if end_thought is not None and not thought.end_requested and end_thought():
            thought.end_now()
        if thought.forcing:
            token = thought.forcing.pop(0)
            accept(chain, token)
        else:
            token = sample(chain, ctx, i)
        thought.saw(token)
        return token

    return pick


def _find_stop(text: str, stops: tuple[str, ...]) -> int:
    """Index of the earliest stop string in text, or -1."""
    best = -1
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of text that is the beginning of a stop string (to hold back)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


def _check_is_gguf(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except IsADirectoryError:
        raise ModelLoadError(f"{path} is a directory, not a GGUF model file") from None
    except FileNotFoundError:
        raise ModelLoadError(f"model file {path} does not exist", "install it with `localchat pull ID`") from None
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {path}: {e.strerror}") from None
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{path.name} is not a GGUF model file (it starts with {magic!r}, a GGUF file starts with b'GGUF')",
            "point localchat at a .gguf file, e.g. one from `localchat list`",
        )


def _flash_attn_in_effect(requested: str, lines: list[str], notes: list[str]) -> bool:
    """llama.cpp resolves flash_attn=auto while creating the context and only says so in its log."""
    if requested != "auto":
        notes.append(f"flash attention {requested} as requested")
        return requested == "on"
    for line in lines:
        if "enabling flash_attn since it is required" in line:  # e.g. for a quantized V cache
            notes.append("flash attention auto: enabled (" + line.split("since it is ")[-1] + ")")
            return True
        if "Flash Attention" in line and "enabled" in line:
            notes.append("flash attention auto: enabled (every layer's device supports it)")
            return True
        if "Flash Attention" in line and "not supported" in line:
            notes.append("flash attention auto: disabled (a layer's device lacks support)")
            return False
    notes.append("flash attention auto: llama.cpp did not report its choice; assuming off")
    return False

