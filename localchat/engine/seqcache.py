"""What one llama.cpp sequence holds, and how a new prompt reuses it: cut back, or restore a checkpoint.

The decode loop asks `prepare(tokens, boundaries)` before evaluating a prompt: it leaves the sequence holding
a prefix of `tokens` (returned as `keep`) and says after which token counts to take a checkpoint while the
rest is evaluated (`save_at`: the message boundaries past `keep`). The loop calls `evaluated()` after each
llama_decode and `checkpoint()` at each save point.

llama.cpp is reached through `lib` (the llama_cpp module the engine's llama package imported), so this module
imports no third-party code. `seq_id` is a parameter throughout: the batched server path keeps one
SequenceCache per slot over one shared CheckpointStore.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from localchat.engine.checkpoints import Checkpoint, CheckpointStore, common_prefix

PARTIAL_ONLY = 1  # LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY: the recurrent state / SWA cache, not the full K/V


@dataclass(frozen=True, slots=True)
class MemoryKind:
    """How a model's cache can go back to an earlier token."""

    can_cut: bool        # llama_memory_seq_rm(seq, p, -1) keeps a correct state for any p
    has_partial: bool    # a part that cannot be cut (recurrent state, SWA window) is what checkpoints save

    @property
    def label(self) -> str:
        if self.can_cut:
            return "yes (attention cache: cut back to any token)"
        return "no (recurrent or sliding-window state: resumed from message-boundary checkpoints)"


def memory_kind(lib: Any, model: Any, swa_full: bool) -> MemoryKind:
    """Hybrid and recurrent models (Qwen3.5, Mamba, LFM2, Granite 4) keep a state per sequence that
    seq_rm cannot cut; a sliding-window cache without swa_full has dropped the tokens behind its window."""
    recurrent = bool(lib.llama_model_is_recurrent(model)) or bool(lib.llama_model_is_hybrid(model))
    swa_limited = lib.llama_model_n_swa(model) > 0 and not swa_full
    cut = not (recurrent or swa_limited)
    return MemoryKind(can_cut=cut, has_partial=not cut)


def save_state(lib: Any, ctx: Any, seq_id: int, partial: bool) -> bytes:
    flags = PARTIAL_ONLY if partial else 0
    n = lib.llama_state_seq_get_size_ext(ctx, seq_id, flags)
    buf = (ctypes.c_uint8 * n)()
    written = lib.llama_state_seq_get_data_ext(ctx, buf, n, seq_id, flags)
    return bytes(buf)[:written]


def restore_state(lib: Any, ctx: Any, seq_id: int, data: bytes, partial: bool) -> bool:
    """False when llama.cpp refuses the bytes (other shapes, K/V type or layout, or a short read); the
    sequence is then empty for a full state, unchanged for a partial one."""
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    read = lib.llama_state_seq_set_data_ext(ctx, buf, len(data), seq_id, PARTIAL_ONLY if partial else 0)
    return read == len(data)


@dataclass(frozen=True, slots=True)
class PromptPlan:
    keep: int                   # tokens already in the sequence: evaluation starts here
    save_at: tuple[int, ...]    # checkpoint after this many tokens of the prompt are in the sequence
    restored: int = 0           # tokens that came from a checkpoint (0: none restored)


class SequenceCache:
    """The tokens sequence `seq_id` holds, kept in step with llama.cpp's memory."""

    def __init__(self, lib: Any, ctx: Any, kind: MemoryKind, store: CheckpointStore, seq_id: int = 0) -> None:
        self.lib, self.ctx, self.kind, self.store, self.seq_id = lib, ctx, kind, store, seq_id
        self.mem = lib.llama_get_memory(ctx)
        self.cached: list[int] = []
        self.boundaries: tuple[int, ...] = ()  # message boundaries of the last prompt (token counts)

    def prepare(self, tokens: Sequence[int], boundaries: Sequence[int] = ()) -> PromptPlan:
        """Leave the sequence holding the longest reusable prefix of `tokens` (never all of it: the last
        token is evaluated for its logits)."""
        limit = len(tokens) - 1
        keep = min(common_prefix(self.cached, tokens), limit)
        if keep < len(self.cached):
            self._park(keep)
        # A checkpoint must beat what stays anyway: the shared prefix where the cache can be cut (or is
        # simply extended), nothing where it cannot.
        floor = keep if self.kind.can_cut or keep == len(self.cached) else 0
        best = self.store.best(tokens, self.seq_id, self.cached, limit)
        restored = 0
        if best is not None and best.n_tokens > floor and self._restore(best):
            keep = restored = best.n_tokens
        elif keep < len(self.cached):
            self._cut(keep)
        keep = min(keep, len(self.cached))
        self.boundaries = tuple(sorted({b for b in boundaries if 0 < b <= len(tokens)}))
        return PromptPlan(keep, tuple(b for b in self.boundaries if b > keep), restored)

    def evaluated(self, tokens: Sequence[int]) -> None:
        self.cached.extend(tokens)

    def checkpoint(self) -> None:
        """Save the sequence's state now (after `cached`): the part seq_rm cannot cut back, if any."""
        if self.kind.has_partial:
            data = save_state(self.lib, self.ctx, self.seq_id, partial=True)
            self.store.put(Checkpoint(tuple(self.cached), data, True, self.seq_id))

    def save_full(self) -> Checkpoint:
        """The whole state after `cached`, for another sequence, a later reopen or the disk."""
        data = save_state(self.lib, self.ctx, self.seq_id, partial=False)
        ckpt = Checkpoint(tuple(self.cached), data, False, self.seq_id)
        self.store.put(ckpt)
        return ckpt

    def clear(self) -> None:
        self.lib.llama_memory_seq_rm(self.mem, self.seq_id, -1, -1)
        self.cached.clear()
        self.store.invalidate(self.seq_id, self.cached)

    def _cut(self, keep: int) -> None:
        if not self.lib.llama_memory_seq_rm(self.mem, self.seq_id, keep, -1):
            self.clear()
            return
        del self.cached[keep:]
        self.store.invalidate(self.seq_id, self.cached)

    def _restore(self, ckpt: Checkpoint) -> bool:
        if ckpt.partial:
            # The attention K/V of ckpt.tokens are still in this sequence: put the recurrent state back to
            # that point, then cut the attention cache (now allowed: nothing recurrent lies past it).
            ok = restore_state(self.lib, self.ctx, self.seq_id, ckpt.data, partial=True)
            if ok and self.lib.llama_memory_seq_rm(self.mem, self.seq_id, ckpt.n_tokens, -1):
                del self.cached[ckpt.n_tokens:]
                self.store.invalidate(self.seq_id, self.cached)
                return True
            self.clear()
            return False
        self.lib.llama_memory_seq_rm(self.mem, self.seq_id, -1, -1)
        if restore_state(self.lib, self.ctx, self.seq_id, ckpt.data, partial=False):
            self.cached[:] = ckpt.tokens  # the same tokens' K/V again: partials within them stay valid
            self.store.invalidate(self.seq_id, self.cached)
            return True
        self.clear()  # refused by llama.cpp: evaluate normally
        return False

    def _park(self, keep: int) -> None:
        """Before the sequence is cut below a message boundary of what it holds (another conversation,
        an edit), keep a full checkpoint of the latest such boundary so coming back costs nothing."""
        mine = [b for b in self.boundaries if keep < b <= len(self.cached)]
        if not mine:
            return
        b = mine[-1]
        if self.store.has_full(self.cached[:b]):
            return
        if b < len(self.cached):
            best = self.store.best(self.cached[:b], self.seq_id, self.cached)
            if self.kind.can_cut:
                self._cut(b)
            elif best is None or best.n_tokens != b or not self._restore(best):
                return
        self.save_full()
