"""Continuous batching: many replies share one `llama_decode` per step.

The scheduling logic only; the llama.cpp calls sit behind `SequenceBackend`, so tests drive it with a fake.
The shape follows llama-server's `update_slots()`: a fixed set of slots, each owning one sequence id of the KV
cache. Every step builds one batch from the next token of every generating slot and prompt chunks of waiting
slots (in arrival order, up to `n_batch`), so a long prompt is evaluated a chunk at a time between decode steps
and running streams keep flowing. A finished or cancelled reply frees its slot at the next step; its tokens
stay in the cache for the conversation's next turn.

Split caches (`backend.split`: one KV stream per sequence, so a sequence's attention spans its own tokens
only, not every slot's): llama.cpp then takes only consecutive sequence ids, in batch order, into one
micro-batch, and each extra micro-batch reads all the weights again. So the batch lists its tokens in sequence
order and the busy slots are kept on sequences 0..k-1: a new reply takes the lowest free slot, and a reply
running above a slot that fell free moves down into it. What slots hold is moved with them (`copy_prefix` of
a whole sequence), so a returning conversation still finds its cache and the least recently used is what a
new one replaces.

Each slot's sequence is kept by a `SlotSequence` (the llama package's SequenceCache for hybrid models, whose
recurrent state cannot be cut back: a returning conversation resumes from its message-boundary checkpoints;
`CutSequence` where the cache can be cut at any token). A new reply goes to the free slot that holds most of
its prompt (a returning conversation finds its own), else the least recently used.

Shared prefixes: a new reply copies (`copy_prefix`) the longest prefix of its prompt that any slot holds, so
a system prompt many requests share is evaluated once. Two prompts arriving together with the same prefix do
not both evaluate it: the later one waits for the earlier's chunks, then copies. Where the cache cannot be cut
(recurrent state), only a slot's whole content can be copied: its state is that of its last token.

One reply alone (no other slot busy, nobody waiting) takes `decode_one`, the backend's one-token path, so a
single client runs at the single-stream rate.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from localchat.engine.checkpoints import common_prefix
from localchat.errors import EngineContextOverflow, EngineError
from localchat.reasoning import ThoughtControl
from localchat.types import SamplingParams


class Sampler(Protocol):
    """One sequence's sampler chain (issue 17's grammar joins it in the backend)."""

    def sample(self, row: int) -> int: ...  # pick a token from the logits of batch row `row`
    def accept(self, token: int) -> None: ...  # a token taken without sampling (a thought's closing tags)
    def close(self) -> None: ...


@dataclass(slots=True)
class Batch:
    """One llama_decode's input: token i goes to sequence seqs[i] at positions[i]; logits where asked."""

    tokens: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    logits: list[bool] = field(default_factory=list)

    def add(self, token: int, seq: int, pos: int, logits: bool) -> int:
        self.tokens.append(token)
        self.seqs.append(seq)
        self.positions.append(pos)
        self.logits.append(logits)
        return len(self.tokens) - 1

    def __len__(self) -> int:
        return len(self.tokens)


class PromptPlan(Protocol):
    @property
    def keep(self) -> int: ...  # tokens already in the sequence: evaluation starts here
    @property
    def save_at(self) -> tuple[int, ...]: ...  # checkpoint once this many prompt tokens are in the sequence


class SlotSequence(Protocol):
    """What one sequence holds (engine.llama.sequence.SequenceCache's public interface)."""

    cached: list[int]  # tokens whose state sits in the sequence, positions 0..len-1

    def prepare(self, tokens: list[int]) -> PromptPlan: ...  # keep a prefix of tokens (never all of it)
    def evaluated(self, tokens: list[int]) -> None: ...
    def checkpoint(self) -> None: ...
    def clear(self) -> None: ...


class SequenceBackend(Protocol):
    """What the scheduler needs of a model: the llama package implements it, tests fake it."""

    can_cut: bool  # any sequence can be cut back to any token (no recurrent state)
    split: bool  # one KV stream per sequence: busy slots are kept on consecutive ids (the module's docstring)

    def tokenize(self, text: str) -> list[int]: ...  # thread-safe: submit() calls it on the caller's thread
    def piece(self, token: int) -> bytes | None: ...  # None: an end-of-generation token
    def decode(self, batch: Batch) -> None: ...  # raises EngineError
    def decode_one(self, token: int, seq: int, pos: int) -> None: ...  # one token, its logits in row 0
    def sampler(self, request: BatchRequest) -> Sampler: ...
    def thought_control(self, request: BatchRequest) -> ThoughtControl | None: ...  # a reasoning model's budget
    def sequence(self, seq: int) -> SlotSequence: ...
    def seq_rm(self, seq: int, p0: int, p1: int) -> bool: ...  # p1 -1: to the end
    def copy_prefix(self, src: int, dst: int, n: int) -> None: ...  # dst holds src's first n tokens after it


@dataclass(frozen=True, slots=True)
class CutPlan:
    keep: int
    save_at: tuple[int, ...] = ()


class CutSequence:
    """A SlotSequence for a cache that can be cut at any token: keep the common prefix, drop the rest."""

    def __init__(self, backend: SequenceBackend, seq: int) -> None:
        self.backend, self.seq = backend, seq
        self.cached: list[int] = []

    def prepare(self, tokens: list[int]) -> CutPlan:
        keep = min(common_prefix(self.cached, tokens), len(tokens) - 1)  # the last token yields the logits
        if keep < len(self.cached):
            if self.backend.seq_rm(self.seq, keep, -1):
                del self.cached[keep:]
            else:
                self.clear()
                keep = 0
        return CutPlan(keep)

    def evaluated(self, tokens: list[int]) -> None:
        self.cached.extend(tokens)

    def checkpoint(self) -> None:
        pass

    def clear(self) -> None:
        self.backend.seq_rm(self.seq, 0, -1)
        self.cached.clear()


class EventSink(Protocol):
    """Where a reply's output goes (the worker turns these into frames keyed by request id)."""

    def delta(self, request_id: str, text: str) -> None: ...
    def done(self, request_id: str, usage: dict) -> None: ...  # usage["finish_reason"] says how it ended
    def error(self, request_id: str, error: EngineError) -> None: ...


@dataclass(slots=True)
class BatchRequest:
    id: str
    prompt: str
    sampling: SamplingParams
    tokens: list[int] = field(default_factory=list)
    arrived: float = 0.0
    end_thought: bool = False  # close a reasoning model's thought as soon as it opens (asked before it started)


class TextAssembler:
    """Token bytes to text for one reply: incremental UTF-8 (a character split across tokens is never shown
    broken) and stop strings (text that may start one is held back until it cannot)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Text that can go out now; sets `stopped` when a stop string appeared (the text before it is kept)."""
        text = self._decoder.decode(piece)
        if not text or not self.stops:
            return text
        self.pending += text
        cut = find_stop(self.pending, self.stops)
        if cut >= 0:
            self.pending = self.pending[:cut]
            self.stopped = True
            return ""
        hold = stop_prefix_len(self.pending, self.stops)
        out, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return out

    def finish(self, model_ended: bool) -> str:
        """The held-back rest. When the model ended, unfinished bytes show as U+FFFD; after a budget or a
        cancel an unfinished character is simply cut."""
        if model_ended and not self.stopped:
            self.pending += self._decoder.decode(b"", final=True)
            cut = find_stop(self.pending, self.stops) if self.stops else -1
            if cut >= 0:
                self.pending = self.pending[:cut]
        out, self.pending = self.pending, ""
        return out


def find_stop(text: str, stops: tuple[str, ...]) -> int:
    """Index of the earliest stop string in text, or -1."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else -1


def stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of text that is the beginning of a stop string (to hold back)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


class Slot:
    """One sequence id of the cache and the reply it is working on, if any."""

    # what belongs to the reply rather than to the sequence id: moves with it (BatchScheduler._move)
    REPLY = ("save_at", "request", "sampler", "text", "next_token", "n_gen", "leader", "thought", "usage",
             "t_first", "t_last")

    def __init__(self, seq: int, sequence: SlotSequence) -> None:
        self.seq, self.sequence = seq, sequence
        self.save_at: tuple[int, ...] = ()  # checkpoint once this many prompt tokens are in the sequence
        self.request: BatchRequest | None = None
        self.sampler: Sampler | None = None
        self.text: TextAssembler | None = None
        self.next_token = -1  # sampled, decoded at the next step
        self.n_gen = 0
        self.leader: tuple[Slot, BatchRequest, int] | None = None  # wait for it to evaluate a shared prefix
        self.thought: ThoughtControl | None = None  # a reasoning model's thought budget and end-now
        self.usage: dict = {}
        self.t_first = self.t_last = 0.0
        self.last_used = 0.0

    @property
    def cached(self) -> list[int]:
        """Tokens whose state sits in this sequence, positions 0..len-1."""
        return self.sequence.cached

    @property
    def generating(self) -> bool:
        return self.request is not None and self.next_token >= 0

    @property
    def prompting(self) -> bool:
        return self.request is not None and self.next_token < 0


class BatchScheduler:
    """Slots, an arrival-order queue and the step loop. submit() and cancel() are thread-safe; step() runs on
    one thread (the worker's decode thread)."""

    def __init__(self, backend: SequenceBackend, sink: EventSink, *, n_slots: int, n_ctx_slot: int,
                 n_batch: int, share_prefixes: bool = True) -> None:
        if n_slots < 1 or n_batch < n_slots:
            raise ValueError(f"n_slots {n_slots} must be >= 1 and <= n_batch {n_batch}")
        self.backend, self.sink = backend, sink
        self.n_ctx_slot, self.n_batch, self.share_prefixes = n_ctx_slot, n_batch, share_prefixes
        self.slots = [Slot(i, backend.sequence(i)) for i in range(n_slots)]
        self._waiting: deque[BatchRequest] = deque()
        self._cancels: set[str] = set()
        self._wake = threading.Condition()
        self.counters = {"submitted": 0, "rejected": 0, "completed": 0, "cancelled": 0, "failed": 0,
                         "steps": 0, "moves": 0, "prompt_tokens": 0, "prompt_eval_tokens": 0, "copied_tokens": 0,
                         "completion_tokens": 0}

    # -- the caller's side -------------------------------------------------------------------------

    def submit(self, request: BatchRequest) -> None:
        """Queue a reply; raises EngineError (nothing queued) if its prompt is empty or cannot fit a slot."""
        tokens = request.tokens or self.backend.tokenize(request.prompt)
        if not tokens:
            raise EngineError("the prompt is empty", "render at least one message before generating")
        if len(tokens) >= self.n_ctx_slot:
            with self._wake:
                self.counters["rejected"] += 1
            raise EngineContextOverflow(
                f"the prompt has {len(tokens)} tokens; a parallel slot holds {self.n_ctx_slot}",
                "shorten the conversation, or serve with fewer --parallel slots or a larger n_ctx")
        request.tokens = tokens
        request.arrived = request.arrived or time.perf_counter()
        with self._wake:
            self.counters["submitted"] += 1
            self._waiting.append(request)
            self._wake.notify()

    def cancel(self, request_id: str) -> None:
        """Stop a reply (queued or running); its slot is free at the next step. Unknown ids are ignored."""
        with self._wake:
            self._cancels.add(request_id)
            self._wake.notify()

    def end_thought(self, request_id: str) -> bool:
        """Close a reasoning model's thought now (its answer follows); False for an id not queued or running."""
        with self._wake:
            for slot in self.slots:
                if slot.request is not None and slot.request.id == request_id:
                    if slot.thought is not None:
                        slot.thought.end_now()  # a flag the decode thread reads at the next token
                    return True
            for request in self._waiting:
                if request.id == request_id:
                    request.end_thought = True
                    return True
            return False

    def wait(self, timeout: float | None = None) -> None:
        """Block the decode thread until there is something to do."""
        with self._wake:
            if not self._waiting and not self._cancels and not self.busy:
                self._wake.wait(timeout)

    @property
    def busy(self) -> bool:
        return any(s.request is not None for s in self.slots)

    # -- the decode thread --------------------------------------------------------------------------

    def step(self) -> bool:
        """Admit, build one batch, decode it, sample; False when there was nothing to do."""
        if self._waiting or self._cancels:  # read without the lock: a request just missed joins next step
            self._apply_cancels_and_admit()
        if self.backend.split:
            self._compact()
        active = [s for s in self.slots if s.request is not None]
        if len(active) == 1 and active[0].generating and not self._waiting:
            return self._step_one(active[0])
        # every generating slot's next token, then prompt chunks in arrival order while n_batch allows ...
        room = self.n_batch - sum(s.generating for s in self.slots)
        takes: dict[int, int] = {}  # slot's seq -> prompt tokens it adds this step
        prompting = sorted((s for s in self.slots if s.prompting), key=lambda s: s.request.arrived)  # type: ignore[union-attr]
        for slot in prompting:
            if room <= 0:
                break
            if not self._follow_leader(slot):
                continue
            start, end = len(slot.cached), len(slot.request.tokens)  # type: ignore[union-attr]
            takes[slot.seq] = take = min([room, end - start] + [p - start for p in slot.save_at if p > start])
            room -= take
        # ... listed in sequence order (a split cache's micro-batch takes consecutive sequence ids only)
        batch = Batch()
        rows: list[tuple[Slot, int, int]] = []  # slot, its logits row (-1: none), tokens it added
        for slot in self.slots:
            if slot.generating:
                rows.append((slot, batch.add(slot.next_token, slot.seq, len(slot.cached), True), 1))
            elif slot.seq in takes:
                prompt, start, take = slot.request.tokens, len(slot.cached), takes[slot.seq]  # type: ignore[union-attr]
                row = -1
                for pos in range(start, start + take):
                    last = pos == len(prompt) - 1
                    i = batch.add(prompt[pos], slot.seq, pos, last)
                    row = i if last else row
                rows.append((slot, row, take))
        if not len(batch):
            return self.busy
        try:
            self.backend.decode(batch)
        except EngineError as e:
            for slot, _, _ in rows:
                self._fail(slot, e)
            return True
        self.counters["steps"] += 1
        now = time.perf_counter()
        for slot, row, added in rows:
            request = slot.request
            assert request is not None
            if slot.generating:
                slot.cached.append(slot.next_token)
            else:
                slot.sequence.evaluated(request.tokens[len(slot.cached):len(slot.cached) + added])
                if len(slot.cached) in slot.save_at:
                    slot.sequence.checkpoint()
                if row < 0:
                    continue  # more prompt chunks to come
                slot.usage["prompt_seconds"] = now - slot.usage.pop("_t_prompt", now)
            self._accept(slot, self._sample(slot, row), now)
        return True

    @staticmethod
    def _sample(slot: Slot, row: int) -> int:
        thought = slot.thought
        if thought is None:
            return slot.sampler.sample(row)  # type: ignore[union-attr]
        # the budget is spent or the user asked: the closing tags instead of a sampled token (the sampler
        # hears of them: penalties count them, a grammar held until `</think>` starts after it)
        if thought.forcing:
            token = thought.forcing.pop(0)
            slot.sampler.accept(token)  # type: ignore[union-attr]
        else:
            token = slot.sampler.sample(row)  # type: ignore[union-attr]
        thought.saw(token)
        return token

    def _step_one(self, slot: Slot) -> bool:
        """One reply alone: its next token through the backend's one-token path."""
        token = slot.next_token
        try:
            self.backend.decode_one(token, slot.seq, len(slot.cached))
        except EngineError as e:
            self._fail(slot, e)
            return True
        self.counters["steps"] += 1
        slot.cached.append(token)
        self._accept(slot, self._sample(slot, 0), time.perf_counter())
        return True

    def _apply_cancels_and_admit(self) -> None:
        with self._wake:
            cancels, self._cancels = self._cancels, set()
            kept: deque[BatchRequest] = deque()
            for request in self._waiting:
                if request.id in cancels:
                    self._count_finish("cancelled")
                    self.sink.done(request.id, self._empty_usage(request, "cancelled"))
                else:
                    kept.append(request)
            self._waiting = kept
            for slot in self.slots:
                if slot.request is not None and slot.request.id in cancels:
                    self._finish(slot, "cancelled")
            while self._waiting:
                free = [s for s in self.slots if s.request is None]
                if not free:
                    break
                self._start(self._waiting.popleft(), free)

    def _start(self, request: BatchRequest, free: list[Slot]) -> None:
        tokens = request.tokens
        slot = self._place(tokens, free)
        slot.save_at = slot.sequence.prepare(tokens).save_at  # cut back, or resume from a checkpoint
        keep = len(slot.cached)
        slot.request, slot.next_token, slot.n_gen, slot.leader = request, -1, 0, None
        slot.sampler = self.backend.sampler(request)
        slot.thought = self.backend.thought_control(request)
        if slot.thought is not None and request.end_thought:
            slot.thought.end_now()
        slot.text = TextAssembler(request.sampling.stop)
        slot.usage = {"prompt_tokens": len(tokens), "prompt_eval_tokens": len(tokens) - keep,
                      "completion_tokens": 0, "ttft": 0.0, "prompt_seconds": 0.0, "decode_seconds": 0.0,
                      "finish_reason": "cancelled", "_t_prompt": time.perf_counter()}
        if self.share_prefixes:
            self._copy_shared(slot)
            if not self.backend.can_cut:
                return  # a recurrent state is copied whole: waiting for a leader's prefix gains nothing
            leaders = [(common_prefix(s.request.tokens, tokens), s) for s in self.slots  # type: ignore[union-attr]
                       if s is not slot and s.prompting]
            if leaders:
                n, leader = max(leaders, key=lambda x: x[0])
                n = min(n, len(tokens) - 1)
                if n > len(slot.cached) and n > len(leader.cached):
                    slot.leader = (leader, leader.request, n)  # type: ignore[assignment]

    def _place(self, tokens: list[int], free: list[Slot]) -> Slot:
        """The slot for a new reply: the one that already holds most of its prompt (a returning conversation),
        else the least recently used. A split cache puts it on the lowest free slot instead, moving there the
        cache it would have found elsewhere; what that slot held moves to the least recently used one."""
        best = max(free, key=lambda s: (common_prefix(s.cached, tokens), -s.last_used))
        if not self.backend.split:
            return best
        low = min(free, key=lambda s: s.seq)
        if common_prefix(best.cached, tokens) <= common_prefix(low.cached, tokens):
            best = low  # nothing more to reuse elsewhere: only the least recently used cache is to give way
        # what low holds takes the place of the least recently used cache (best's is kept: it moves to low)
        victim = min((s for s in free if s is low or s is not best), key=lambda s: s.last_used)
        if victim is not low and low.cached:
            self._move(low, victim)
        if best is not low:
            self._move(best, low)
        return low

    def _compact(self) -> None:
        """Split cache: keep the busy slots on sequences 0..k-1. A reply running above a free slot moves down
        into it; the cache it held there (a finished conversation, for its next turn) moves to the least
        recently used free slot, if there is another."""
        while True:
            free = [s for s in self.slots if s.request is None]
            busy = [s for s in self.slots if s.request is not None]
            if not free or not busy or busy[-1].seq < free[0].seq:
                return
            hole, top = free[0], busy[-1]
            spare = [s for s in free if s is not hole]
            with self._wake:  # end_thought() looks for the reply from another thread
                if hole.cached and spare:
                    self._move(hole, min(spare, key=lambda s: s.last_used))
                self._move(top, hole)

    def _move(self, src: Slot, dst: Slot) -> None:
        """dst takes src's cache (what dst held is dropped) and src's reply, if any. src keeps a copy of the
        cache, valid for reuse, and no reply."""
        dst.sequence.clear()
        if src.cached:
            self.backend.copy_prefix(src.seq, dst.seq, len(src.cached))
            dst.sequence.evaluated(list(src.cached))
        dst.last_used = src.last_used
        self.counters["moves"] += 1
        if src.request is None:
            return
        for name in Slot.REPLY:
            setattr(dst, name, getattr(src, name))
        src.request = src.sampler = src.text = src.leader = src.thought = None
        src.next_token = -1

    def _copy_shared(self, slot: Slot) -> None:
        """Copy into slot's sequence the longest prefix of its prompt that another sequence holds."""
        tokens = slot.request.tokens  # type: ignore[union-attr]
        best, source = len(slot.cached), None
        for other in self.slots:
            if other is not slot and len(other.cached) > best:
                n = min(common_prefix(other.cached, tokens), len(tokens) - 1)
                if not self.backend.can_cut and n != len(other.cached):
                    continue  # a recurrent state is that after the sequence's last token
                if n > best:
                    best, source = n, other
        if source is None:
            return
        start = len(slot.cached)
        slot.sequence.clear()
        self.backend.copy_prefix(source.seq, slot.seq, best)
        slot.sequence.evaluated(tokens[:best])
        slot.save_at = tuple(p for p in slot.save_at if p > best)
        slot.usage["prompt_eval_tokens"] -= best - start
        self.counters["copied_tokens"] += best - start

    def _follow_leader(self, slot: Slot) -> bool:
        """False while this slot waits for an earlier one to evaluate the prefix they share."""
        if slot.leader is None:
            return True
        leader, request, n = slot.leader
        if leader.request is request and leader.prompting and len(leader.cached) < n:
            return False
        slot.leader = None
        self._copy_shared(slot)
        return True

    def _accept(self, slot: Slot, token: int, now: float) -> None:
        request, text, usage = slot.request, slot.text, slot.usage
        assert request is not None and text is not None
        if slot.n_gen == 0:
            slot.t_first = now
            usage["ttft"] = now - request.arrived
        piece = self.backend.piece(token)
        if piece is None:
            self._finish(slot, "stop", model_ended=True)
            return
        slot.n_gen += 1
        slot.t_last = now
        out = text.feed(piece)
        if out:
            self.sink.delta(request.id, out)
        if text.stopped:
            self._finish(slot, "stop")
        elif slot.n_gen >= (request.sampling.max_tokens if request.sampling.max_tokens > 0 else self.n_ctx_slot) \
                or len(slot.cached) >= self.n_ctx_slot:
            self._finish(slot, "length")
        else:
            slot.next_token = token

    def _finish(self, slot: Slot, reason: str, model_ended: bool = False) -> None:
        request, usage = slot.request, slot.usage
        assert request is not None
        rest = slot.text.finish(model_ended) if slot.text is not None and reason != "cancelled" else ""
        if rest:
            self.sink.delta(request.id, rest)
        usage.pop("_t_prompt", None)
        usage.update(completion_tokens=slot.n_gen, decode_seconds=slot.t_last - slot.t_first if slot.n_gen else 0.0,
                     finish_reason=reason)
        if slot.thought is not None:
            usage["reasoning_tokens"] = slot.thought.thought_tokens
        self._release(slot)
        self._count_finish(reason, usage)
        self.sink.done(request.id, usage)

    def _fail(self, slot: Slot, error: EngineError) -> None:
        """A failed decode leaves the sequence's cache unknown: drop it."""
        request = slot.request
        assert request is not None
        slot.sequence.clear()
        self._release(slot)
        self.counters["failed"] += 1
        self.sink.error(request.id, error)

    def fail_all(self, error: EngineError) -> None:
        """Every running reply ends with `error` and its sequence is dropped (after an unexpected failure)."""
        for slot in self.slots:
            if slot.request is not None:
                self._fail(slot, error)

    def _release(self, slot: Slot) -> None:
        if slot.sampler is not None:
            slot.sampler.close()
        slot.request = slot.sampler = slot.text = slot.leader = slot.thought = None
        slot.next_token = -1
        slot.last_used = time.perf_counter()

    def _count_finish(self, reason: str, usage: dict | None = None) -> None:
        self.counters["cancelled" if reason == "cancelled" else "completed"] += 1
        if usage:
            for key in ("prompt_tokens", "prompt_eval_tokens", "completion_tokens"):
                self.counters[key] += usage[key]

    @staticmethod
    def _empty_usage(request: BatchRequest, reason: str) -> dict:
        return {"prompt_tokens": len(request.tokens), "prompt_eval_tokens": 0, "completion_tokens": 0, "ttft": 0.0,
                "prompt_seconds": 0.0, "decode_seconds": 0.0, "finish_reason": reason}


def auto_parallel(on_gpu: bool, free_bytes: int, kv_bytes_per_token: int, n_ctx: int) -> tuple[int, str]:
    """Slots for `parallel: auto`: 8 on a GPU (decode there is bound by reading the weights, so more streams
    cost little each), 4 on the CPU (llama-server's own auto), fewer where their KV caches would take more
    than half the free memory. Returns the count and the note that says why."""
    want = 8 if on_gpu else 4
    per_slot = max(1, kv_bytes_per_token * n_ctx)
    fits = max(1, (free_bytes // 2) // per_slot) if free_bytes > 0 else want
    n = min(want, fits)
    where = "GPU" if on_gpu else "CPU"
    why = f"{want} on the {where}" if n == want else \
        f"{want} on the {where}, {n} fit in half the free memory at {n_ctx} tokens of context each"
    return n, f"parallel auto: {n} replies at once ({why})"


class CoalescingSink:
    """Deltas gathered per reply and passed on at most every `flush_seconds` (a reply's first text at once,
    for its time to first token); a reply's text always goes out before its `done`. Used by the decode
    thread only."""

    def __init__(self, out: EventSink, flush_seconds: float) -> None:
        self.out, self.flush_seconds = out, flush_seconds
        self._pending: dict[str, list[str]] = {}
        self._started: set[str] = set()
        self._next = time.perf_counter() + flush_seconds

    def delta(self, request_id: str, text: str) -> None:
        if request_id not in self._started:
            self._started.add(request_id)
            self.out.delta(request_id, text)
        else:
            self._pending.setdefault(request_id, []).append(text)

    def done(self, request_id: str, usage: dict) -> None:
        self._flush(request_id)
        self._started.discard(request_id)
        self.out.done(request_id, usage)

    def error(self, request_id: str, error: EngineError) -> None:
        self._flush(request_id)
        self._started.discard(request_id)
        self.out.error(request_id, error)

    def tick(self) -> None:
        now = time.perf_counter()
        if now >= self._next and self._pending:
            for request_id in list(self._pending):
                self._flush(request_id)
            self._next = now + self.flush_seconds

    def _flush(self, request_id: str) -> None:
        parts = self._pending.pop(request_id, None)
        if parts:
            self.out.delta(request_id, "".join(parts))


class BatchLoop:
    """The decode thread: steps the scheduler while there is work, sleeps while there is none."""

    def __init__(self, scheduler: BatchScheduler, sink: CoalescingSink) -> None:
        self.scheduler, self.sink = scheduler, sink
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-decode", daemon=True)

    def start(self) -> BatchLoop:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self.scheduler.cancel("")  # wakes the thread
        self._thread.join()

    def _run(self) -> None:
        scheduler = self.scheduler
        while not self._closed.is_set():
            try:
                worked = scheduler.step()
            except Exception as e:  # noqa: BLE001 - a bug fails the replies in flight, not the worker
                import traceback

                traceback.print_exc()
                scheduler.fail_all(EngineError(f"internal error: {type(e).__name__}: {e}"))
                worked = True
            self.sink.tick()
            if not worked:
                scheduler.wait(0.5)
