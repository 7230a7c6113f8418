"""Sequence-state checkpoints: saved llama.cpp states of a token prefix, so a prompt that leaves the cache
before its end resumes from the last message boundary it shares instead of from token 0.

Why: hybrid models (Qwen3.5 `qwen35`: Gated DeltaNet layers with a recurrent state) cannot cut their cache
back to an earlier token (`llama_memory_seq_rm` fails), so every prompt that is not a pure extension of the
cached tokens (old thinking dropped, regenerate, edit, another conversation) would evaluate from scratch.

Two kinds, as llama-server's context checkpoints (tools/server/server-context.cpp) use them:
- partial: only the part of the memory that cannot be rolled back (the recurrent state, or the SWA cache),
  `LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY`. Tens of KiB to a few MiB, whatever the depth. Usable only by the
  sequence that took it and while that sequence's cache still holds its tokens: restore it, then
  `llama_memory_seq_rm(seq, n_tokens, -1)` cuts the attention cache (which can be cut) to match.
- full: the whole sequence state (attention K/V of every token too). Usable by any sequence, also after a
  restart: what a conversation switch and the disk copy need.

Pure Python (no llama_cpp): the RAM store under a byte budget, least recently used dropped first, and the
disk format. The llama.cpp calls live in the engine's llama package.
"""

from __future__ import annotations

import hashlib
import os
import struct
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

from localchat.errors import LocalchatError


class CheckpointRejected(LocalchatError):
    """A checkpoint file that must not be restored: truncated, corrupt, or from another model or settings."""


@dataclass(frozen=True, slots=True)
class CheckpointKey:
    """What makes a saved state valid: the same model file, chat template and state-shaping load settings."""

    model: str     # model_identity() of the GGUF (or its recorded sha256)
    template: str  # the template's name (a rendered prefix differs between templates)
    settings: str  # settings_fingerprint(): n_ctx, K/V type, flash attention, llama.cpp version, ...

    def digest(self) -> bytes:
        return hashlib.sha256("\0".join((self.model, self.template, self.settings)).encode()).digest()


def settings_fingerprint(**settings: object) -> str:
    """A stable string of the load settings that shape a sequence state (sorted, so order never matters)."""
    return ";".join(f"{k}={settings[k]}" for k in sorted(settings))


def model_identity(path: str | Path, chunk: int = 1 << 20) -> str:
    """A cheap fingerprint of a model file: its size and the sha256 of its first and last MiB. Hashing a
    multi-GB file before every restore would cost seconds; a different model differs in its header (names,
    shapes, tensor offsets) or its size. Callers that know the file's recorded sha256 pass that instead."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(chunk))
        f.seek(max(0, size - chunk))
        h.update(f.read(chunk))
    return h.hexdigest()


@dataclass(frozen=True, slots=True, eq=False)
class Checkpoint:
    """The state of a sequence after `tokens`."""

    tokens: tuple[int, ...]
    data: bytes
    partial: bool      # recurrent/SWA part only: needs the taking sequence's attention cache still in place
    seq_id: int = 0    # the sequence that took it (what a partial checkpoint is bound to)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def size(self) -> int:
        return len(self.data) + 4 * len(self.tokens)


def token_offsets(piece_lengths: Sequence[int], byte_offsets: Sequence[int]) -> list[int]:
    """Message boundaries given as byte offsets of the rendered prompt -> token counts: how many of the
    prompt's tokens (their UTF-8 lengths in `piece_lengths`) end at or before each offset. A boundary inside
    a token falls back to that token's start, so a checkpoint never covers bytes past its boundary."""
    ends, total = [], 0
    for n in piece_lengths:
        total += n
        ends.append(total)
    return [bisect_right(ends, b) for b in byte_offsets]


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items (tokens, or characters of two prompts) `a` and `b` share: a binary search over
    slice comparisons, which run at C speed, for prompts of tens of thousands of tokens."""
    if type(a) is not type(b):  # a tuple's slice never equals a list's, whatever they hold
        a, b = list(a), list(b)
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class CheckpointStore:
    """Checkpoints in RAM under `budget` bytes; the least recently used go first. Per sequence id, so the
    batched server's slots use the same store as the single stream (a partial checkpoint is only offered
    to its own sequence)."""

    budget: int
    _items: OrderedDict[int, Checkpoint] = field(default_factory=OrderedDict)
    _used: int = 0
    _next: int = 0

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items.values()))

    def put(self, ckpt: Checkpoint) -> bool:
        """Keep `ckpt` (replacing one of the same kind, sequence and tokens); False if it alone exceeds the
        budget. Older checkpoints are dropped until everything fits."""
        if ckpt.size > self.budget:
            return False
        for key, old in list(self._items.items()):
            if old.partial == ckpt.partial and old.tokens == ckpt.tokens and (old.seq_id == ckpt.seq_id or not ckpt.partial):
                self._drop(key)
        self._items[self._next] = ckpt
        self._next += 1
        self._used += ckpt.size
        while self._used > self.budget:
            self._drop(next(iter(self._items)))
        return True

    def best(self, tokens: Sequence[int], seq_id: int, cached: Sequence[int], limit: int | None = None) -> Checkpoint | None:
        """The usable checkpoint covering the longest prefix of `tokens` (at most `limit` tokens, so that at
        least one prompt token is left to evaluate). `cached` is what sequence `seq_id` holds now: a partial
        checkpoint needs its tokens still there. Marks the one returned as recently used."""
        limit = len(tokens) if limit is None else limit
        shared_with_cache = common_prefix(tokens, cached)
        found_key, found = None, None
        for key, c in self._items.items():
            n = c.n_tokens
            if n > limit or (found is not None and n <= found.n_tokens):
                continue
            if c.partial and (c.seq_id != seq_id or n > shared_with_cache):
                continue
            if tuple(tokens[:n]) == c.tokens:
                found_key, found = key, c
        if found_key is not None:
            self._items.move_to_end(found_key)
        return found

    def has_full(self, tokens: Sequence[int]) -> bool:
        t = tuple(tokens)
        return any(not c.partial and c.tokens == t for c in self._items.values())

    def invalidate(self, seq_id: int, cached: Sequence[int]) -> None:
        """Sequence `seq_id` now holds `cached`: its partial checkpoints beyond what it still holds are dead."""
        for key, c in list(self._items.items()):
            if c.partial and c.seq_id == seq_id and common_prefix(c.tokens, cached) < c.n_tokens:
                self._drop(key)

    def _drop(self, key: int) -> None:
        self._used -= self._items.pop(key).size


# The disk format: a header naming the model/template/settings digest, the token prefix, the state bytes,
# and a sha256 over all of it, so a truncated or altered file is refused before llama.cpp reads it.
_MAGIC = b"LCCKPT01"
_HEADER = struct.Struct("<8s32sBII")  # magic, key digest, partial, n_tokens, n_data


def write_checkpoint(path: str | Path, key: CheckpointKey, ckpt: Checkpoint) -> Path:
    """Write atomically (a temp file, then rename): a crash leaves the old file or none, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = _HEADER.pack(_MAGIC, key.digest(), int(ckpt.partial), ckpt.n_tokens, len(ckpt.data))
    tokens = struct.pack(f"<{ckpt.n_tokens}i", *ckpt.tokens)
    digest = hashlib.sha256(head + tokens + ckpt.data).digest()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(head)
        f.write(tokens)
        f.write(ckpt.data)
        f.write(digest)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path, key: CheckpointKey, seq_id: int = 0) -> Checkpoint:
    """Read and check a checkpoint file; CheckpointRejected says why one must not be used."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointRejected(f"checkpoint {path.name} cannot be read: {exc.strerror}") from exc
    if len(raw) < _HEADER.size + 32:
        raise CheckpointRejected(f"checkpoint {path.name} is truncated")
    magic, digest, partial, n_tokens, n_data = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        raise CheckpointRejected(f"{path.name} is not a localchat checkpoint")
    end = _HEADER.size + 4 * n_tokens + n_data
    if len(raw) != end + 32:
        raise CheckpointRejected(f"checkpoint {path.name} is truncated or has trailing bytes")
    if hashlib.sha256(raw[:end]).digest() != raw[end:]:
        raise CheckpointRejected(f"checkpoint {path.name} is corrupt (checksum mismatch)")
    if digest != key.digest():
        raise CheckpointRejected(f"checkpoint {path.name} belongs to another model file, template or load settings")
    tokens = struct.unpack_from(f"<{n_tokens}i", raw, _HEADER.size)
    return Checkpoint(tuple(tokens), raw[_HEADER.size + 4 * n_tokens:end], bool(partial), seq_id)


def default_budget(available_bytes: int | None = None) -> int:
    """RAM for checkpoints when the user sets none: an eighth of the memory available now, within
    [64 MiB, 4 GiB]. A partial checkpoint of a 0.8B-9B Qwen3.5 is a few MiB; full ones grow with depth."""
    if available_bytes is None:
        available_bytes = _available_memory()
    return max(64 << 20, min(4 << 30, available_bytes // 8))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30
