"""The continuous-batching scheduler against a fake model whose every token depends on the whole sequence held in
its (fake) KV cache: a reply answered in a crowd equals the same prompt answered alone only if the scheduler kept
every sequence's cache, positions, prefix copies and samplers straight."""

from __future__ import annotations

import random
import zlib

import pytest

from localchat.engine.batch import Batch, BatchRequest, BatchScheduler, CutSequence, TextAssembler
from localchat.errors import EngineContextOverflow, EngineError
from localchat.types import SamplingParams

EOG = 256
GREEDY = SamplingParams(temperature=0.0, max_tokens=40)


class FakeModel:
    """Tokens are the prompt's bytes; the next token is a function of a rolling hash over every token of the
    sequence, so a wrong position, a missing copy or a stale cache entry changes the reply."""

    def __init__(self, fail_on_step: int | None = None, split: bool = False) -> None:
        self.split = split  # a KV stream per sequence: count the micro-batches llama.cpp would make
        self.passes: list[int] = []  # micro-batches of each decode
        self.kv: dict[int, list[tuple[int, int]]] = {}  # seq -> [(token, hash through it)]
        self.batches: list[Batch] = []
        self.rows: dict[int, int] = {}  # logits row -> hash of its sequence through that token
        self.fail_on_step = fail_on_step
        self.decoded = 0
        self.solo_steps = 0

    def tokenize(self, text: str) -> list[int]:
        return list(text.encode())

    def piece(self, token: int) -> bytes | None:
        return None if token == EOG else bytes([token])

    def decode(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.passes.append(micro_batches(batch.seqs) if self.split else 1)
        if self.fail_on_step is not None and len(self.batches) == self.fail_on_step:
            raise EngineError("llama_decode failed with code -3")
        self.rows = {}
        for i, (token, seq, pos, logits) in enumerate(zip(batch.tokens, batch.seqs, batch.positions, batch.logits)):
            cells = self.kv.setdefault(seq, [])
            assert pos == len(cells), f"seq {seq}: token at {pos} but the cache holds {len(cells)}"
            h = zlib.crc32(token.to_bytes(2, "little"), cells[-1][1] if cells else 0)
            cells.append((token, h))
            self.decoded += 1
            if logits:
                self.rows[i] = h

    def sampler(self, request: BatchRequest):
        model, s = self, request.sampling

        class Pick:
            def sample(self, row: int) -> int:
                h = model.rows[row]
                if s.temperature > 0:
                    h = random.Random(h ^ (s.seed or 0)).randrange(1 << 30)
                return EOG if h % 37 == 0 else 97 + h % 26

            def accept(self, token: int) -> None:
                pass

            def close(self) -> None:
                pass

        return Pick()

    def thought_control(self, request: BatchRequest):
        return None  # a model that does not reason (tests/engine/test_thought_control.py drives the real one)

    def seq_rm(self, seq: int, p0: int, p1: int) -> bool:
        assert p1 == -1
        del self.kv.setdefault(seq, [])[p0:]
        return True

    can_cut = True

    def decode_one(self, token: int, seq: int, pos: int) -> None:
        self.solo_steps += 1
        batch = Batch()
        batch.add(token, seq, pos, True)
        self.decode(batch)

    def sequence(self, seq: int) -> CutSequence:
        return CutSequence(self, seq)

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        assert not self.kv.get(dst), "a copy replaces the destination's cache: the scheduler empties it first"
        self.kv[dst] = self.kv[src][:n]


def micro_batches(seqs: list[int]) -> int:
    """How many micro-batches llama.cpp's split_equal(sequential=True) makes of a batch for a split cache:
    each takes, in batch order, sequences whose ids follow one another, and as many tokens of each."""
    left, count = list(range(len(seqs))), 0
    while left:
        chosen: list[int] = []
        for i in left:
            if seqs[i] not in chosen and (not chosen or seqs[i] == chosen[-1] + 1):
                chosen.append(seqs[i])
        per = min(sum(seqs[i] == s for i in left) for s in chosen)
        taken = {i for s in chosen for i in [i for i in left if seqs[i] == s][:per]}
        left = [i for i in left if i not in taken]
        count += 1
    return count


def test_micro_batches_follows_llama_cpp():
    assert micro_batches([0, 1, 2, 3]) == 1
    assert micro_batches([0, 1, 3, 4]) == 2  # a free slot between busy ones
    assert micro_batches([1, 0]) == 2  # out of order
    assert micro_batches([0, 1, 1, 1, 2]) == 2  # a prompt chunk: one token of each, then the rest


@pytest.fixture(params=["unified", "split"])
def split(request) -> bool:
    return request.param == "split"


class Sink:
    def __init__(self) -> None:
        self.text: dict[str, str] = {}
        self.usage: dict[str, dict] = {}
        self.errors: dict[str, EngineError] = {}
        self.order: list[str] = []

    def delta(self, request_id: str, text: str) -> None:
        assert request_id not in self.usage, "text after done"
        self.text[request_id] = self.text.get(request_id, "") + text

    def done(self, request_id: str, usage: dict) -> None:
        self.usage[request_id] = usage
        self.order.append(request_id)

    def error(self, request_id: str, error: EngineError) -> None:
        self.errors[request_id] = error


def scheduler(model=None, *, slots=4, n_ctx_slot=256, n_batch=32, share=True, split=False):
    model = model or FakeModel(split=split)
    sink = Sink()
    return BatchScheduler(model, sink, n_slots=slots, n_ctx_slot=n_ctx_slot, n_batch=n_batch,
                          share_prefixes=share), model, sink


def drain(sched: BatchScheduler, limit: int = 10_000) -> None:
    for _ in range(limit):
        if not sched.step():
            return
    raise AssertionError("the scheduler did not go idle")


def alone(prompt: str, sampling: SamplingParams) -> tuple[str, dict]:
    sched, _, sink = scheduler(slots=1)
    sched.submit(BatchRequest("x", prompt, sampling))
    drain(sched)
    return sink.text.get("x", ""), sink.usage["x"]


PROMPTS = [f"user {i}: " + "tell me something " * (i % 4 + 1) for i in range(10)]


def test_replies_in_a_crowd_equal_the_same_prompts_answered_alone(split):
    sched, model, sink = scheduler(slots=4, n_batch=24, split=split)
    samplings = [GREEDY if i % 2 else SamplingParams(temperature=0.8, seed=i, max_tokens=10 + i) for i in range(10)]
    for i, (p, s) in enumerate(zip(PROMPTS, samplings)):
        sched.submit(BatchRequest(f"r{i}", p, s))
    drain(sched)
    for i, (p, s) in enumerate(zip(PROMPTS, samplings)):
        text, usage = alone(p, s)
        assert sink.text.get(f"r{i}", "") == text
        assert sink.usage[f"r{i}"]["completion_tokens"] == usage["completion_tokens"]
        assert sink.usage[f"r{i}"]["finish_reason"] == usage["finish_reason"]
    assert all(len(b) <= 24 for b in model.batches)
    assert max(len({s for s, want in zip(b.seqs, b.logits) if want}) for b in model.batches) == 4
    assert sched.counters["completed"] == 10 and not sched.busy


def test_several_streams_share_one_decode_per_step():
    sched, model, _ = scheduler(slots=4, n_batch=64)
    for i in range(4):
        sched.submit(BatchRequest(f"r{i}", PROMPTS[i], SamplingParams(temperature=0.0, max_tokens=20)))
    drain(sched)
    # after the prompts, each step decodes one token for each of the streams still running
    assert max(sum(b.logits) for b in model.batches) == 4
    assert len(model.batches) < 4 * 20


def test_a_long_prompt_is_evaluated_in_chunks_while_a_stream_keeps_flowing():
    sched, model, sink = scheduler(slots=2, n_batch=8, n_ctx_slot=512)
    sched.submit(BatchRequest("short", "hi", SamplingParams(temperature=0.0, max_tokens=400, seed=0)))
    sched.step()
    long_prompt = "a long question " * 10
    sched.submit(BatchRequest("long", long_prompt, GREEDY))
    steps_before = len(model.batches)
    while sink.usage.get("long") is None and "long" not in sink.text:
        sched.step()
    chunks = model.batches[steps_before:]
    assert len(chunks) >= len(long_prompt) // 8
    if "short" not in sink.usage:  # every step of the long prompt also decoded the running stream's next token
        assert all(1 in b.seqs and b.seqs.count(0) <= 1 for b in chunks)
    assert all(len(b) <= 8 for b in chunks)
    drain(sched)
    assert sink.text["long"] == alone(long_prompt, GREEDY)[0]


def test_a_shared_system_prompt_is_evaluated_once_and_copied(split):
    system = "You are a helpful assistant who answers briefly. " * 3
    prompts = [system + f"question {i}?" for i in range(4)]
    sched, _, sink = scheduler(slots=4, n_batch=16, split=split)
    for i, p in enumerate(prompts):
        sched.submit(BatchRequest(f"r{i}", p, GREEDY))
    drain(sched)
    evaluated = sum(u["prompt_eval_tokens"] for u in sink.usage.values())
    assert evaluated <= len(system) + sum(len(p) - len(system) for p in prompts) + 4
    assert sched.counters["copied_tokens"] >= 3 * (len(system) - 1)
    for i, p in enumerate(prompts):
        assert sink.text[f"r{i}"] == alone(p, GREEDY)[0]


def test_without_sharing_each_prompt_is_evaluated_whole():
    system = "You are a helpful assistant. " * 3
    sched, _, sink = scheduler(slots=2, share=False)
    for i in range(2):
        sched.submit(BatchRequest(f"r{i}", system + f"q{i}", GREEDY))
    drain(sched)
    assert [u["prompt_eval_tokens"] for u in sink.usage.values()] == [len(system) + 2] * 2


def test_a_returning_conversation_reuses_its_own_slot_cache(split):
    sched, _, sink = scheduler(slots=3, split=split)
    first = "user: hello\nassistant: "
    sched.submit(BatchRequest("t1", first, GREEDY))
    sched.submit(BatchRequest("other", "something else entirely", GREEDY))
    drain(sched)
    second = first + sink.text["t1"] + "\nuser: and then?\nassistant: "
    sched.submit(BatchRequest("t2", second, GREEDY))
    drain(sched)
    assert sink.usage["t2"]["prompt_eval_tokens"] <= len("\nuser: and then?\nassistant: ") + 1
    assert sink.text["t2"] == alone(second, GREEDY)[0]


def test_a_reply_alone_takes_the_one_token_path_and_a_newcomer_joins_the_batch():
    sched, model, sink = scheduler(slots=2)
    long = SamplingParams(temperature=0.0, max_tokens=30)
    sched.submit(BatchRequest("a", "xyzzy 3", long))
    for _ in range(6):
        sched.step()
    assert model.solo_steps == 5  # after its prompt, one token per step on the one-token path
    sched.submit(BatchRequest("b", PROMPTS[2], GREEDY))
    sched.step()
    assert model.solo_steps == 5 and sorted(set(model.batches[-1].seqs)) == [0, 1]
    drain(sched)
    assert sink.text["a"] == alone("xyzzy 3", long)[0] and sink.text["b"] == alone(PROMPTS[2], GREEDY)[0]


class Recurrent(FakeModel):
    """A cache that cannot be cut back (a hybrid model's recurrent state): a sequence is only ever extended,
    emptied, or restored whole from a checkpoint its own slot took TAIL tokens before a prompt's end."""

    can_cut = False
    TAIL = 4

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[tuple[int, ...], list] = {}

    def seq_rm(self, seq: int, p0: int, p1: int) -> bool:
        if 0 < p0 < len(self.kv.get(seq, [])):
            return False
        return super().seq_rm(seq, max(p0, 0), p1)

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        assert n == len(self.kv[src]), "only a whole recurrent state can be copied"
        super().copy_prefix(src, dst, n)

    def sequence(self, seq: int):
        model = self

        class Seq(CutSequence):
            def prepare(self, tokens):
                plan = super().prepare(tokens)
                if plan.keep == 0:
                    best = max((k for k in model.saved if list(k) == tokens[:len(k)] and len(k) < len(tokens)),
                               key=len, default=())
                    model.kv[seq] = list(model.saved.get(best, []))
                    self.cached[:] = best
                n = len(tokens) - model.TAIL
                return type(plan)(len(self.cached), (n,) if n > len(self.cached) else ())

            def checkpoint(self):
                model.saved[tuple(self.cached)] = list(model.kv[seq])

        return Seq(self, seq)


def test_a_cache_that_cannot_be_cut_resumes_from_checkpoints_and_copies_only_whole_states():
    model = Recurrent()
    sched, _, sink = scheduler(model, slots=2)
    first = "system: be brief\nuser: hello\nassistant:\t"
    sched.submit(BatchRequest("t1", first, GREEDY))
    drain(sched)
    assert any(len(b) and 0 in b.seqs for b in model.batches) and tuple(first[:-4].encode()) in model.saved
    # the next turn renders the reply without the generation prompt's last byte: the slot resumes from the
    # checkpoint TAIL before the previous prompt's end
    second = first[:-1] + sink.text["t1"] + "\nuser: more\nassistant:\t"
    sched.submit(BatchRequest("t2", second, GREEDY))
    # another conversation sharing the system prompt gets no copy: no slot's whole state is its prefix
    sched.submit(BatchRequest("o", "system: be brief\nuser: other\nassistant:\t", GREEDY))
    drain(sched)
    assert sink.usage["t2"]["prompt_eval_tokens"] == len(second) - (len(first) - 4)
    assert sink.usage["o"]["prompt_eval_tokens"] == sink.usage["o"]["prompt_tokens"]
    assert sched.counters["copied_tokens"] == 0
    # a prompt that continues a slot's whole content is copied from it
    third = second + sink.text["t2"] + "!"
    sched.submit(BatchRequest("t3", third, GREEDY))
    sched.submit(BatchRequest("t3b", third + "?", GREEDY))
    drain(sched)
    for rid, prompt in (("t2", second), ("o", "system: be brief\nuser: other\nassistant:\t"), ("t3", third),
                        ("t3b", third + "?")):
        assert sink.text.get(rid, "") == alone(prompt, GREEDY)[0]
    # t3b resumed from t2's checkpoint in the other slot, then copied the rest of t2's slot (its whole state)
    assert sink.usage["t3b"]["prompt_eval_tokens"] <= 2 and sched.counters["copied_tokens"] > 0


def test_requests_beyond_the_slots_wait_in_arrival_order():
    sched, _, sink = scheduler(slots=1)
    for i in range(4):
        sched.submit(BatchRequest(f"r{i}", PROMPTS[i], GREEDY))
    drain(sched)
    assert sink.order == ["r0", "r1", "r2", "r3"]


def test_cancel_frees_the_slot_at_the_next_step_and_others_continue(split):
    sched, model, sink = scheduler(slots=2, split=split)
    never_ends = SamplingParams(temperature=0.0, max_tokens=10_000)
    sched.submit(BatchRequest("a", "first prompt", never_ends))
    sched.submit(BatchRequest("b", "second prompt", GREEDY))
    sched.submit(BatchRequest("queued", "third prompt", GREEDY))
    sched.submit(BatchRequest("c", "fourth prompt", GREEDY))
    for _ in range(5):
        sched.step()
    sched.cancel("a")
    sched.cancel("queued")
    sched.step()
    assert sink.usage["a"]["finish_reason"] == "cancelled" and sink.usage["a"]["completion_tokens"] >= 1
    assert sink.usage["queued"]["finish_reason"] == "cancelled" and "queued" not in sink.text
    # a's slot took the next waiting request in the same step ("queued" was cancelled before it)
    assert sched.slots[0].request.id == "c" and 0 in model.batches[-1].seqs
    drain(sched)
    assert sink.text["b"] == alone("second prompt", GREEDY)[0]
    assert sink.text["c"] == alone("fourth prompt", GREEDY)[0]
    assert sched.counters["cancelled"] == 2 and sched.counters["completed"] == 2
    sched.cancel("unknown")
    assert not sched.step()


def test_a_prompt_that_does_not_fit_its_slot_is_refused_without_disturbing_others():
    sched, _, sink = scheduler(slots=2, n_ctx_slot=64)
    sched.submit(BatchRequest("ok", "short", GREEDY))
    sched.step()
    with pytest.raises(EngineContextOverflow, match="a parallel slot holds 64"):
        sched.submit(BatchRequest("big", "x" * 64, GREEDY))
    with pytest.raises(EngineError, match="empty"):
        sched.submit(BatchRequest("empty", "", GREEDY))
    drain(sched)
    assert sink.text["ok"] == alone("short", GREEDY)[0] and sched.counters["rejected"] == 1


def test_a_slot_that_fills_up_ends_with_length():
    sched, _, sink = scheduler(slots=2, n_ctx_slot=60)
    sched.submit(BatchRequest("r", PROMPTS[1], SamplingParams(temperature=0.0, max_tokens=0)))  # 44 tokens
    drain(sched)
    u = sink.usage["r"]
    # the 17th token fills position 60 and is sent but not decoded: the same rule as the single-stream path
    assert u["finish_reason"] == "length" and u["completion_tokens"] == 17


def test_budget_stop_strings_and_usage():
    text, usage = alone(PROMPTS[1], SamplingParams(temperature=0.0, max_tokens=5))
    assert usage["completion_tokens"] == 5 and usage["finish_reason"] == "length" and len(text) == 5
    full, _ = alone(PROMPTS[1], SamplingParams(temperature=0.0, max_tokens=40))
    stop = full[3:5]
    cut, u = alone(PROMPTS[1], SamplingParams(temperature=0.0, max_tokens=40, stop=(stop,)))
    assert cut == full[:full.index(stop)] and u["finish_reason"] == "stop"


def test_a_failed_decode_fails_the_replies_in_it_and_the_next_ones_run(split):
    sched, _, sink = scheduler(FakeModel(fail_on_step=3, split=split), slots=2)
    sched.submit(BatchRequest("a", PROMPTS[1], GREEDY))
    sched.submit(BatchRequest("b", "two", GREEDY))
    drain(sched)
    assert set(sink.errors) == {"a", "b"} and not sched.busy
    sched.submit(BatchRequest("c", "three", GREEDY))
    drain(sched)
    assert sink.text["c"] == alone("three", GREEDY)[0] and sched.counters["failed"] == 2


def test_text_assembler_holds_back_a_possible_stop_and_joins_split_characters():
    t = TextAssembler(("</end>",))
    emoji = "🙂".encode()
    out = t.feed(b"hi <") + t.feed(b"/en") + t.feed(emoji[:2]) + t.feed(emoji[2:])
    assert out == "hi </en🙂"
    t = TextAssembler(("</end>",))
    out = t.feed(b"ok </e") + t.feed(b"nd> more")
    assert out == "ok " and t.stopped and t.finish(model_ended=False) == ""
    t = TextAssembler(())
    assert t.feed(emoji[:3]) == "" and t.finish(model_ended=True) == "\ufffd"


def test_auto_parallel_from_device_and_memory():
    from localchat.engine.batch import auto_parallel

    assert auto_parallel(True, 80 << 30, 57_344, 4096)[0] == 8
    assert auto_parallel(False, 16 << 30, 12_288, 4096)[0] == 4
    n, note = auto_parallel(True, 1 << 30, 57_344, 4096)  # 224 MiB a slot, 512 MiB to spend
    assert n == 2 and "fit in half the free memory" in note
    assert auto_parallel(False, 1 << 20, 12_288, 4096)[0] == 1


def test_the_decode_thread_serves_requests_from_other_threads_and_coalesces_deltas():
    import threading

    from localchat.engine.batch import BatchLoop, CoalescingSink

    class Recorder(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.frames: dict[str, int] = {}
            self.finished = threading.Event()

        def delta(self, request_id: str, text: str) -> None:
            super().delta(request_id, text)
            self.frames[request_id] = self.frames.get(request_id, 0) + 1

        def done(self, request_id: str, usage: dict) -> None:
            super().done(request_id, usage)
            if len(self.usage) == 6:
                self.finished.set()

    out = Recorder()
    sched = BatchScheduler(FakeModel(), CoalescingSink(out, flush_seconds=60), n_slots=3, n_ctx_slot=256, n_batch=32)
    loop = BatchLoop(sched, sched.sink).start()  # type: ignore[arg-type]
    try:
        submitters = [threading.Thread(target=sched.submit, args=(BatchRequest(f"r{i}", PROMPTS[i], GREEDY),))
                      for i in range(6)]
        for t in submitters:
            t.start()
        assert out.finished.wait(30)
    finally:
        loop.close()
    for i in range(6):
        assert out.text.get(f"r{i}", "") == alone(PROMPTS[i], GREEDY)[0]
        # the first text at once, the rest held for the flush interval and sent before done
        assert out.frames.get(f"r{i}", 0) <= 2


class ThinkingModel(FakeModel):
    """Every reply starts inside a thought (a template-opened one) with a budget of 2 tokens; "[" and "]"
    stand for the closing "\\n" and </think>."""

    def thought_control(self, request: BatchRequest):
        from localchat.reasoning import ThoughtControl

        return ThoughtControl(ord("<"), ord("]"), [ord("["), ord("]")], in_thought=True, budget=2)


def test_a_slots_thought_is_closed_by_its_budget_or_when_asked():
    sched, _, sink = scheduler(ThinkingModel(), slots=1)
    sched.submit(BatchRequest("a", "first", GREEDY))
    sched.submit(BatchRequest("b", "second", GREEDY))
    assert sched.end_thought("b") is True, "queued: closed as soon as its thought runs"
    assert sched.end_thought("nobody") is False
    drain(sched)
    assert sink.text["a"][2:4] == "[]" and sink.usage["a"]["reasoning_tokens"] == 4
    assert sink.text["b"][1:3] == "[]" and sink.usage["b"]["reasoning_tokens"] == 3


def decode_only(batch: Batch) -> bool:
    return all(batch.logits) and len(set(batch.seqs)) == len(batch)


def test_a_split_cache_decodes_each_step_in_one_micro_batch():
    sched, model, sink = scheduler(slots=4, n_batch=24, split=True)
    samplings = [SamplingParams(temperature=0.0, max_tokens=3 + 7 * (i % 3)) for i in range(10)]
    for i in range(6):
        sched.submit(BatchRequest(f"r{i}", PROMPTS[i], samplings[i]))
    for _ in range(12):
        sched.step()
    for i in range(6, 10):  # late arrivals fill the slots that fell free
        sched.submit(BatchRequest(f"r{i}", PROMPTS[i], samplings[i]))
    drain(sched)
    for i in range(10):
        assert sink.text.get(f"r{i}", "") == alone(PROMPTS[i], samplings[i])[0]
    steps = [(b, n) for b, n in zip(model.batches, model.passes) if decode_only(b)]
    assert len(steps) > 10 and all(n == 1 for _, n in steps)
    assert all(b.seqs == sorted(b.seqs) for b in model.batches)


def test_a_split_cache_moves_a_reply_down_into_a_freed_slot_and_keeps_the_finished_conversation():
    sched, model, sink = scheduler(slots=4, split=True)
    short, long = SamplingParams(temperature=0.0, max_tokens=2), SamplingParams(temperature=0.0, max_tokens=30)
    first = "user: hello\nassistant: "
    sched.submit(BatchRequest("a", first, short))
    sched.submit(BatchRequest("b", "second prompt", long))
    sched.submit(BatchRequest("c", "third prompt", long))
    while "a" not in sink.usage:
        sched.step()
    sched.step()
    # c ran on sequence 2; it now runs on a's sequence 0, so the step is one micro-batch again
    assert [s.request.id if s.request else None for s in sched.slots] == ["c", "b", None, None]
    assert sorted(model.batches[-1].seqs) == [0, 1] and model.passes[-1] == 1 and sched.counters["moves"] == 2
    # a's conversation moved to a free slot: its next turn evaluates only what is new
    second = first + sink.text["a"] + "\nuser: and then?\nassistant: "
    sched.submit(BatchRequest("a2", second, GREEDY))
    drain(sched)
    assert sink.usage["a2"]["prompt_eval_tokens"] <= len("\nuser: and then?\nassistant: ") + 1
    for rid, prompt, s in (("a2", second, GREEDY), ("b", "second prompt", long), ("c", "third prompt", long)):
        assert sink.text[rid] == alone(prompt, s)[0]
    assert all(n == 1 for b, n in zip(model.batches, model.passes) if decode_only(b))


def test_a_split_cache_gives_way_least_recently_used_first():
    sched, model, sink = scheduler(slots=3, split=True)
    for rid in ("x", "y", "z"):  # one at a time: each lands on sequence 0, the one before moves out of its way
        sched.submit(BatchRequest(rid, f"conversation {rid}: hi", GREEDY))
        drain(sched)
    held = {bytes(s.cached[:16]).decode() for s in sched.slots}
    assert held == {f"conversation {rid}: hi"[:16] for rid in "xyz"}
    sched.submit(BatchRequest("w", "conversation w: hi", GREEDY))  # x, the least recently used, gives way
    drain(sched)
    held = {bytes(s.cached[:16]).decode() for s in sched.slots}
    assert held == {f"conversation {rid}: hi"[:16] for rid in "yzw"}
    assert sink.text["w"] == alone("conversation w: hi", GREEDY)[0]
