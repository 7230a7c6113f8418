"""Embeddings in the worker: a second llama.cpp context on the loaded model, made on the first request.

Pooling comes from the model's metadata (`{arch}.pooling_type`: an embedding model says mean, cls or
last); a chat model, which names none, is pooled by the mean over its tokens, as Ollama does. Vectors
are L2-normalised (what OpenAI's and Ollama's embeddings are). The context is separate from the chat
one so an embedding request never evicts a conversation's KV cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from localchat.errors import LocalchatError
from localchat.types import Embeddings

POOLING_NONE, POOLING_MEAN = 0, 1


class EmbeddingInputTooLong(LocalchatError):
    """An input has more tokens than the embedding context holds (and truncation was not asked for)."""


class EmbeddingContext:
    def __init__(self, lib: Any, model: Any, n_ctx: int, n_threads: int,
                 tokenize: Callable[[str], list[int]]) -> None:
        import numpy as np  # llama-cpp-python depends on it

        self.lib, self._np, self.tokenize = lib, np, tokenize
        params = lib.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx  # one input is one ubatch (pooling needs it)
        params.n_seq_max = 1
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
        self.pooling = lib.llama_pooling_type(self.ctx)

    def embed(self, texts: Sequence[str], truncate: bool) -> Embeddings:
        lib, np = self.lib, self._np
        vectors, total = [], 0
        for i, text in enumerate(texts):
            tokens = self.tokenize(text)
            if not tokens:
                raise LocalchatError(f"input[{i}] has no tokens: there is nothing to embed")
            if len(tokens) > self.n_ctx:
                if not truncate:
                    raise EmbeddingInputTooLong(f"input[{i}] is {len(tokens)} tokens; this model embeds at most "
                                                f"{self.n_ctx} at a time", "shorten or split it")
                tokens = tokens[:self.n_ctx]
            total += len(tokens)
            lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
            array = (lib.llama_token * len(tokens))(*tokens)
            rc = lib.llama_decode(self.ctx, lib.llama_batch_get_one(array, len(tokens)))
            if rc != 0:
                raise LocalchatError(f"llama.cpp could not embed input[{i}] (llama_decode returned {rc})")
            pooled = lib.llama_get_embeddings_seq(self.ctx, 0)
            vector = np.ctypeslib.as_array(pooled, shape=(self.n_embd,)).astype(np.float64)
            norm = float(np.linalg.norm(vector)) or 1.0
            vectors.append((vector / norm).tolist())
        return Embeddings(vectors, total)

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
