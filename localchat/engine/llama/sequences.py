"""The llama.cpp side of continuous batching: `SequenceBackend` over one context that holds `n_seq_max`
sequences. With a KV stream per sequence (`model.kv_split`) a copy between sequences copies the whole stream
(llama.cpp does it at the next decode) and cuts the copy back; in a unified cache it adds a sequence id to the
cells. Split streams put only consecutive sequence ids into one micro-batch: the scheduler keeps its busy
slots and its batches in that order (localchat.engine.batch).

The model object is the single-stream path's loaded model: its tokenizer, token pieces and sampler chains
are reused, so a reply's text and sampling are built the same way on both paths.
"""

from __future__ import annotations

import ctypes
from typing import Any

from localchat.engine.batch import Batch, BatchRequest, CutSequence, SlotSequence
from localchat.engine.llama.sequence import SequenceCache
from localchat.errors import EngineContextOverflow, EngineError


class ChainSampler:
    """A native sampler chain over one row of the batch's logits; freed with the reply."""

    def __init__(self, lib: Any, ctx: Any, chain: Any) -> None:
        self._lib, self._ctx, self._chain = lib, ctx, chain

    def sample(self, row: int) -> int:
        return int(self._lib.llama_sampler_sample(self._chain, self._ctx, row))

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        if self._chain is not None:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None


class GrammarChainSampler:
    """A sampler chain whose picks follow a request's grammar (JSON output, tool calls), as on the
    single-stream path: the chain's pick is checked against the grammar and resampled only when refused."""

    def __init__(self, lib: Any, ctx: Any, chain: Any, grammar: Any) -> None:
        self._lib, self._ctx, self._chain, self._grammar = lib, ctx, chain, grammar

    def sample(self, row: int) -> int:
        return self._grammar.sample(self._chain, self._ctx, row)

    def accept(self, token: int) -> None:
        self._grammar.accept(self._chain, token)

    def close(self) -> None:
        if self._chain is not None:
            self._grammar.free()
            self._lib.llama_sampler_free(self._chain)
            self._chain = None


class ArgmaxSampler:
    """Plain greedy: numpy's argmax over the row's logits (the single-stream path's shortcut, same pick)."""

    def __init__(self, lib: Any, ctx: Any, n_vocab: int) -> None:
        import numpy as np  # llama-cpp-python depends on it

        self._logits, self._ctx, self._n = lib.llama_get_logits_ith, ctx, n_vocab
        self._as_array = np.ctypeslib.as_array

    def sample(self, row: int) -> int:
        return int(self._as_array(self._logits(self._ctx, row), shape=(self._n,)).argmax())

    def accept(self, token: int) -> None:
        pass  # no state to keep

    def close(self) -> None:
        pass


class LlamaSequences:
    """SequenceBackend for BatchScheduler. `model` provides lib, ctx, n_vocab, kv_split, tokenize(), piece_bytes(),
    sampler_chain(SamplingParams) and plain_greedy(SamplingParams)."""

    def __init__(self, model: Any, n_batch: int) -> None:
        self.model = model
        self.lib = lib = model.lib
        self.ctx = model.ctx
        self.mem = lib.llama_get_memory(self.ctx)
        self.n_batch = n_batch
        self.can_cut = model.sequence.kind.can_cut
        self.split = model.kv_split
        self._decode = lib.llama_decode
        one = self._one_batch = lib.llama_batch_init(1, 0, 1)  # decode_one's: one token, its logits
        one.n_tokens, one.n_seq_id[0], one.logits[0] = 1, 1, 1
        self._one_token, self._one_pos, self._one_seq = one.token, one.pos, one.seq_id[0]
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        b = self._batch
        # flat views of the batch's arrays: slice assignment fills a step's tokens in one call each
        self._tokens: Any = (ctypes.c_int32 * n_batch).from_address(ctypes.addressof(b.token.contents))
        self._pos: Any = (ctypes.c_int32 * n_batch).from_address(ctypes.addressof(b.pos.contents))
        self._logits: Any = (ctypes.c_int8 * n_batch).from_address(ctypes.addressof(b.logits.contents))
        n_seq_id = (ctypes.c_int32 * n_batch).from_address(ctypes.addressof(b.n_seq_id.contents))
        n_seq_id[:] = [1] * n_batch
        self._seq = [b.seq_id[i] for i in range(n_batch)]

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text)

    def piece(self, token: int) -> bytes | None:
        return self.model.piece_bytes(token)

    def decode(self, batch: Batch) -> None:
        n = len(batch)
        if n > self.n_batch:
            raise EngineError(f"a batch of {n} tokens exceeds n_batch {self.n_batch}")
        self._tokens[:n] = batch.tokens
        self._pos[:n] = batch.positions
        self._logits[:n] = batch.logits
        seq = self._seq
        for i, s in enumerate(batch.seqs):
            seq[i][0] = s
        self._batch.n_tokens = n
        self._check(self._decode(self.ctx, self._batch))

    def decode_one(self, token: int, seq: int, pos: int) -> None:
        self._one_token[0], self._one_pos[0], self._one_seq[0] = token, pos, seq
        rc = self._decode(self.ctx, self._one_batch)
        if rc:
            self._check(rc)

    def _check(self, rc: int) -> None:
        if rc == 1:
            raise EngineContextOverflow("the KV cache has no room for this step", "serve with fewer --parallel slots "
                                        "or a larger n_ctx")
        if rc:
            raise EngineError(f"llama_decode failed with code {rc}", "see the engine log")

    def sampler(self, request: BatchRequest) -> ChainSampler | ArgmaxSampler | GrammarChainSampler:
        s = request.sampling
        if s.grammar is not None:  # checked by the worker when the request arrived (model.grammar_sampler)
            grammar = self.model.grammar_sampler(s)
            return GrammarChainSampler(self.lib, self.ctx, self.model.sampler_chain(s), grammar)
        if self.model.plain_greedy(s):
            return ArgmaxSampler(self.lib, self.ctx, self.model.n_vocab)
        return ChainSampler(self.lib, self.ctx, self.model.sampler_chain(s))

    def thought_control(self, request: BatchRequest):
        """A reasoning model's thought budget for this reply, as on the single-stream path (None otherwise)."""
        return self.model.thought_control(request.prompt, request.sampling, len(request.tokens))

    def seq_rm(self, seq: int, p0: int, p1: int) -> bool:
        return bool(self.lib.llama_memory_seq_rm(self.mem, seq, p0, p1))

    def sequence(self, seq: int) -> SlotSequence:
        """Where the cache can be cut, the common prefix is kept; a hybrid model's slots resume from
        checkpoints in the model's store (slot 0 is the model's own SequenceCache, sequence 0)."""
        if self.can_cut:
            return CutSequence(self, seq)
        own = self.model.sequence
        return own if seq == 0 else SequenceCache(self.lib, self.ctx, own.kind, own.store, seq)

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        if self.split:  # llama.cpp copies a stream whole (a part of one is refused): the copy is cut back
            self.lib.llama_memory_seq_cp(self.mem, src, dst, -1, -1)
            self.lib.llama_memory_seq_rm(self.mem, dst, n, -1)
            return
        # cells of positions 0..n-1 gain dst's id (a recurrent state is shared whole: the scheduler copies one
        # only where n is all its sequence holds)
        self.lib.llama_memory_seq_cp(self.mem, src, dst, 0, n)

    def close(self) -> None:
        for name in ("_batch", "_one_batch"):
            if getattr(self, name) is not None:
                self.lib.llama_batch_free(getattr(self, name))
                setattr(self, name, None)
