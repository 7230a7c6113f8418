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
# A checkpoint this many tokens before a prompt's end (as llama-server's): a Qwen3.5 generation prompt
# "<|im_start|>assistant\n<think>\n" differs from the history's "<|im_start|>assistant\n" + answer in its
# last 2 tokens, Llama 3's header is 4 tokens.
TAIL = 4


@dataclass(frozen=True, slots=True)
class MemoryKind:
    """How a model's cache can go back to an earlier token."""

    can_cut: bool        # llama_memory_seq_rm(seq, p, -1) keeps a correct state for any p
    has_partial: bool    # a part that cannot be cut (recurrent state, SWA window) is what checkpoints save
    window: int = 0      # sliding window without swa_full: a cut is correct while the window behind it is kept

    @property
    def label(self) -> str:
        if self.can_cut:
            return "yes (attention cache: cut back to any token)"
        if self.window:
            return f"within its {self.window}-token sliding window; further back from message-boundary checkpoints"
        return "no (recurrent state: resumed from message-boundary checkpoints)"


def memory_kind(lib: Any, model: Any, swa_full: bool) -> MemoryKind:
    """Hybrid and recurrent models (Qwen3.5, Mamba, LFM2, Granite 4) keep a state per sequence that
    seq_rm cannot cut; a sliding-window cache without swa_full has dropped the tokens behind its window."""
    recurrent = bool(lib.llama_model_is_recurrent(model)) or bool(lib.llama_model_is_hybrid(model))
    window = 0 if swa_full or recurrent else int(lib.llama_model_n_swa(model))
    cut = not (recurrent or window)
    return MemoryKind(can_cut=cut, has_partial=not cut, window=window)


def save_state(lib: Any, ctx: Any, seq_id: int, partial: bool) -> bytes:
    flags = PARTIAL_ONLY if partial else 0
    n = lib.llama_state_seq_get_size_ext(ctx, seq_id, flags)
    buf = (ctypes.c_uint8 * n)()
    written = lib.llama_state_seq_get_data_ext(ctx, buf, n, seq_id, flags)
    return ctypes.string_at(buf, written)  # one copy (bytes(buf)[:written] made two: tens of MB each)


def restore_state(lib: Any, ctx: Any, seq_id: int, data: bytes, partial: bool) -> bool:
    """False when llama.cpp refuses the bytes (other shapes, K/V type or layout, or a short read); the
    sequence is then empty for a full state, unchanged for a partial one."""
    # llama.cpp only reads the buffer: it is handed the bytes object's own memory, not a copy of it
    buf = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))
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
        self.save_points: tuple[int, ...] = ()  # where the last prompt was checkpointed (token counts)
        self.park_points: tuple[int, ...] = ()

    def prepare(self, tokens: Sequence[int], boundaries: Sequence[int] = ()) -> PromptPlan:
        """Leave the sequence holding the longest reusable prefix of `tokens` (never all of it: the last
        token is evaluated for its logits). `boundaries`: the token offsets where the prompt's messages
        start (the chat layer knows them; the generation prompt is not a message)."""
        limit = len(tokens) - 1
        keep = min(common_prefix(self.cached, tokens), limit)
        if keep < len(self.cached):
            self._park(keep)
        # A checkpoint must beat what stays anyway: the shared prefix where the cache can be cut (or is
        # simply extended), nothing where it cannot.
        floor = keep if self._cuttable(keep) or keep == len(self.cached) else 0
        best = self.store.best(tokens, self.seq_id, self.cached, limit)
        restored = 0
        if best is not None and best.n_tokens > floor and self._restore(best):
            keep = restored = best.n_tokens
        elif keep < len(self.cached):
            self._cut(keep)
        keep = min(keep, len(self.cached))
        # Two save points per prompt (a partial checkpoint of a 0.8B Qwen3.5 is ~19 MiB and takes ~40 ms):
        # the start of the last message (edit and resend) and the start of the generation prompt, or TAIL
        # tokens before the end (regenerate, and the next turn when the template renders the reply without
        # the "<think>" its generation prompt ended with). Earlier boundaries were saved by earlier turns.
        n = len(tokens)
        tail = n - TAIL
        starts = [b for b in boundaries if 0 < b < n]
        # The chat layer gives the last message's start and the generation prompt's: those two. TAIL tokens
        # before the end stands in for the latter where none is given near the end (a raw prompt).
        points = starts[-2:] + ([] if starts and starts[-1] >= n - 2 * TAIL else [tail])
        self.save_points = tuple(sorted({p for p in points if 0 < p < n}))  # checkpointed now or before
        self.park_points = tuple(starts[-1:])  # _park: the caller's last boundary too
        return PromptPlan(keep, tuple(p for p in self.save_points if p > keep), restored)

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

    def full_for(self, tokens: Sequence[int]) -> Checkpoint | None:
        """A full checkpoint of the longest prefix of `tokens` this sequence can give: a full one in the
        store, or one made now from the cache (cut back to the shared prefix where it can be, else restored
        to a partial checkpoint inside it). What a conversation left for another one goes to disk as."""
        tokens = list(tokens)
        best = self.store.best(tokens, self.seq_id, self.cached)
        have = best.n_tokens if best is not None else 0
        shared = common_prefix(self.cached, tokens)
        if shared > have and (shared == len(self.cached) or self._cuttable(shared)):
            if shared < len(self.cached):
                self._cut(shared)
            if len(self.cached) == shared:
                return self.save_full()
        if best is None:
            return None
        if best.partial:
            return self.save_full() if self._restore(best) else None
        return best

    def clear(self) -> None:
        self.lib.llama_memory_seq_rm(self.mem, self.seq_id, -1, -1)
        self.cached.clear()
        self.store.invalidate(self.seq_id, self.cached)

    def _cut(self, keep: int) -> None:
        if not self._cuttable(keep) or not self.lib.llama_memory_seq_rm(self.mem, self.seq_id, keep, -1):
            self.clear()
            return
        del self.cached[keep:]
        self.store.invalidate(self.seq_id, self.cached)

    def _cuttable(self, keep: int) -> bool:
        """A sliding-window cache "succeeds" at seq_rm even where it has dropped the window behind `keep`
        (measured: cut back below pos_min + n_swa, the next logits are wrong), so it is asked first."""
        if self.kind.can_cut:
            return True
        if not self.kind.window:
            return False
        return 0 <= self.lib.llama_memory_seq_pos_min(self.mem, self.seq_id) <= keep - self.kind.window

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
        an edit), keep full checkpoints so coming back costs nothing: at the latest save point, and at the
        caller's last boundary where that is earlier (the next turn may part before TAIL: a tokenizer that
        spells "<think>" in many tokens)."""
        held = len(self.cached)
        points = {p for p in self.save_points[-1:] + self.park_points[-1:] if keep < p <= held}
        for b in sorted(points, reverse=True):  # the later first: the earlier partial stays restorable
            if self.store.has_full(self.cached[:b]):
                continue
            if b < len(self.cached):
                best = self.store.best(self.cached[:b], self.seq_id, self.cached)
                if self._cuttable(b):
                    self._cut(b)
                elif best is None or best.n_tokens != b or not self._restore(best):
                    continue
            self.save_full()


@dataclass(frozen=True, slots=True)
class CheckpointCost:
    """What `doctor --model ID` reports about a model's cache."""

    kind: MemoryKind
    partial_bytes: int          # one message-boundary checkpoint (recurrent state / SWA window); 0: not needed
    full_bytes_per_token: float  # a full checkpoint grows by this per token of conversation


def measure_checkpoint_cost(lib: Any, ctx: Any, model: Any, swa_full: bool, probe_tokens: Sequence[int],
                            seq_id: int = 0) -> CheckpointCost:
    """Decode `probe_tokens` (any valid ids, 16 or more) into an empty sequence, read the state sizes,
    and empty it again."""
    kind = memory_kind(lib, model, swa_full)
    mem = lib.llama_get_memory(ctx)
    lib.llama_memory_seq_rm(mem, seq_id, -1, -1)
    half = len(probe_tokens) // 2
    sizes = []
    try:
        for part in (probe_tokens[:half], probe_tokens[half:]):
            arr = (ctypes.c_int32 * len(part))(*part)
            if lib.llama_decode(ctx, lib.llama_batch_get_one(arr, len(part))) != 0:
                raise RuntimeError("llama_decode failed while measuring the checkpoint size")
            sizes.append(lib.llama_state_seq_get_size_ext(ctx, seq_id, 0))
        partial = lib.llama_state_seq_get_size_ext(ctx, seq_id, PARTIAL_ONLY) if kind.has_partial else 0
    finally:
        lib.llama_memory_seq_rm(mem, seq_id, -1, -1)
    per_token = (sizes[1] - sizes[0]) / max(1, len(probe_tokens) - half)
    return CheckpointCost(kind, partial, per_token)
