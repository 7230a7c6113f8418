"""Embeddings in the worker: a second llama.cpp context on the loaded model, made on the first request.

Pooling comes from the model's metadata (`{arch}.pooling_type`: an embedding model says mean, cls or
last); a chat model, which names none, is pooled by the mean over its tokens, as Ollama does. Vectors
are L2-normalised (what OpenAI's and Ollama's embeddings are). The context is separate from the chat
one so an embedding request never evicts a conversation's KV cache.

Several inputs go into one `llama_decode`, one sequence each, as many as fit in the window: llama.cpp
pools per sequence, and a sequence must sit whole in one micro-batch (n_ubatch = n_batch = the window).
llama.cpp also computes and keeps the logits of every token of a batch in embedding mode (n_vocab floats
each: 2.4 GB for 4,096 tokens of Qwen3's 151k vocabulary), so inputs are packed only up to
LOGITS_BUDGET; a longer input still goes alone.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

from localchat.errors import EngineContextOverflow, EngineRequestError, LocalchatError
from localchat.types import Embeddings

POOLING_NONE, POOLING_MEAN = 0, 1
POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
MAX_WINDOW = 4096  # tokens per input (and per batch): documents are chunked below this for search anyway
MAX_SEQS = 64  # inputs decoded together at most
LOGITS_BUDGET = 256 * 2**20  # bytes of logits a batch of several inputs may make llama.cpp hold


class EmbeddingContext:
    def __init__(self, lib: Any, model: Any, n_ctx: int, n_threads: int,
                 tokenize: Callable[[str], list[int]]) -> None:
        import numpy as np  # llama-cpp-python depends on it

        self.lib, self._np, self.tokenize = lib, np, tokenize
        params = lib.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx  # a batch is one ubatch (pooling needs it)
        params.n_seq_max = MAX_SEQS
        params.kv_unified = True  # every sequence may use the whole window
        params.n_threads = params.n_threads_batch = n_threads
        params.embeddings = True
        params.no_perf = True
        params.pooling_type = -1  # unspecified: the model's own
        self.ctx = lib.llama_init_from_model(model, params)
        if self.ctx and lib.llama_pooling_type(self.ctx) == POOLING_NONE:
            lib.llama_free(self.ctx)
            params.pooling_type = POOLING_MEAN
            self.ctx = lib.llama_init_from_model(model, params)
        if not self.ctx:
            raise LocalchatError("llama.cpp could not make an embedding context for this model",
                                 "free some memory or load the model with a smaller n_ctx")
        self.n_ctx = n_ctx
        self.n_embd = lib.llama_model_n_embd(model)
        n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
        self.pack_limit = max(1, min(n_ctx, LOGITS_BUDGET // (4 * max(1, n_vocab))))  # tokens per shared decode
        self.pooling = lib.llama_pooling_type(self.ctx)
        self._batch = lib.llama_batch_init(n_ctx, 0, 1)
        self.decodes = 0  # llama_decode calls so far (the tests check that inputs share them)

    def embed(self, texts: Sequence[str], truncate: bool) -> Embeddings:
        """One L2-normalised vector per text; raises EngineContextOverflow for a text longer than the
        window (unless `truncate`), EngineRequestError for one with no tokens."""
        inputs = [self._tokens(i, text, truncate) for i, text in enumerate(texts)]
        vectors: list[list[float]] = []
        group: list[list[int]] = []
        for tokens in inputs:
            if group and (len(group) == MAX_SEQS or sum(map(len, group)) + len(tokens) > self.pack_limit):
                vectors += self._decode(group)
                group = []
            group.append(tokens)
        vectors += self._decode(group)
        return Embeddings(vectors, sum(map(len, inputs)))

    def _tokens(self, i: int, text: str, truncate: bool) -> list[int]:
        tokens = self.tokenize(text)
        if not tokens:
            raise EngineRequestError(f"input[{i}] has no tokens: there is nothing to embed")
        if len(tokens) > self.n_ctx:
            if not truncate:
                raise EngineContextOverflow(
                    f"input[{i}] is {len(tokens)} tokens; the embedding context holds at most {self.n_ctx} per input",
                    "shorten it or split it into chunks")
            tokens = tokens[:self.n_ctx]
        return tokens

    def _decode(self, group: list[list[int]]) -> list[list[float]]:
        lib, np, b = self.lib, self._np, self._batch
        n = 0
        for seq, tokens in enumerate(group):
            for pos, token in enumerate(tokens):
                b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = token, pos, 1, 1  # pooling wants every output
                b.seq_id[n][0] = seq
                n += 1
        b.n_tokens = n
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        rc = lib.llama_decode(self.ctx, b)
        self.decodes += 1
        if rc != 0:
            raise LocalchatError(f"llama.cpp could not embed {len(group)} inputs (llama_decode returned {rc})",
                                 "see the engine log")
        vectors = []
        for seq in range(len(group)):
            pooled = lib.llama_get_embeddings_seq(self.ctx, seq)
            if not pooled:
                raise LocalchatError("llama.cpp returned no pooled embedding", "see the engine log")
            vector = np.ctypeslib.as_array(ctypes.cast(pooled, ctypes.POINTER(ctypes.c_float)),
                                           shape=(self.n_embd,)).astype(np.float64)
            norm = float(np.linalg.norm(vector)) or 1.0
            vectors.append((vector / norm).tolist())
        return vectors

    def close(self) -> None:
        if self._batch is not None:
            self.lib.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
