"""Checkpoints through real llama.cpp: how many prompt tokens each chat scenario evaluates, on an attention
model (tiny llama) and a hybrid one (tiny qwen35, whose cache cannot be cut back)."""

from __future__ import annotations

import pytest

from localchat.engine.checkpoints import Checkpoint, CheckpointStore
from localchat.engine.llama.model import NativeModel
from localchat.engine.llama.sequence import TAIL, SequenceCache, memory_kind, restore_state
from localchat.types import LoadOptions


@pytest.fixture(scope="module")
def tiny_qwen35(tmp_path_factory):
    from tests.support.ggufgen import make_tiny_qwen35_gguf

    return make_tiny_qwen35_gguf(tmp_path_factory.mktemp("models") / "tiny-qwen35.gguf")


@pytest.fixture(scope="module", params=["llama", "qwen35"])
def model(request, tiny_model, tiny_qwen35):
    m = NativeModel(tiny_model if request.param == "llama" else tiny_qwen35, LoadOptions(n_ctx=2048, n_threads=1))
    yield m
    m.close()


class Chat:
    """Token-level conversations: each message a run of distinct token ids; boundaries at message starts."""

    def __init__(self, model: NativeModel, budget: int = 64 << 20) -> None:
        self.m = model
        self.m.lib.llama_memory_clear(model.mem, True)
        self.seq = SequenceCache(model.lib, model.ctx, memory_kind(model.lib, model.model, swa_full=True),
                                 CheckpointStore(budget))

    def run(self, messages: list[list[int]], reply: list[int]) -> int:
        """Evaluate the prompt made of `messages` and the generation prompt (telling the cache where the
        messages start), then decode `reply` as the model's answer; return how many prompt tokens were
        evaluated."""
        tokens = [t for msg in messages for t in msg] + GEN
        bounds, n = [], 0
        for msg in messages:
            bounds.append(n)
            n += len(msg)
        plan = self.seq.prepare(tokens, bounds)
        start = plan.keep
        for stop in [*plan.save_at, len(tokens)]:
            if stop > start:
                self._decode(tokens[start:stop])
                start = stop
            if stop in plan.save_at:
                self.seq.checkpoint()
        for t in reply:
            self._decode([t])
        return len(tokens) - plan.keep

    def _decode(self, toks: list[int]) -> None:
        import ctypes

        arr = (ctypes.c_int32 * len(toks))(*toks)
        assert self.m.lib.llama_decode(self.m.ctx, self.m.lib.llama_batch_get_one(arr, len(toks))) == 0
        self.seq.evaluated(toks)


def msg(seed: int, n: int = 20) -> list[int]:
    return [3 + (seed * 37 + i * 11) % 250 for i in range(n)]


SYSTEM_A, SYSTEM_B, GEN = msg(1, 12), msg(2, 12), msg(99, 3)  # GEN: "<|im_start|>assistant\n"
THINK, ANSWER, END = msg(50, 30), msg(51, 15), msg(98, 2)


def test_next_turn_with_old_thinking_dropped_evaluates_only_new_tokens(model):
    chat = Chat(model)
    history = [SYSTEM_A]
    for turn in range(4):
        user = msg(10 + turn)
        evaluated = chat.run([*history, user], reply=THINK + ANSWER)
        # An attention cache is cut where the prompts part; a hybrid one resumes from the checkpoint TAIL
        # tokens before the previous prompt's end: those, then the new ones.
        extra = 0 if chat.seq.kind.can_cut else TAIL
        expected = len(SYSTEM_A + user + GEN) if turn == 0 else extra + len(ANSWER + END + user + GEN)
        assert evaluated == expected, f"turn {turn + 1}"
        history += [user, GEN + ANSWER + END]  # the template drops the thinking from the history


def test_regenerate_and_edit_last_message(model):
    chat = Chat(model)
    prompt = [SYSTEM_A, msg(10), GEN + ANSWER + END, msg(11)]
    chat.run(prompt, reply=ANSWER)
    # Regenerate: an attention cache is cut to the last token; a hybrid one resumes TAIL tokens before it.
    assert chat.run(prompt, reply=THINK) == (1 if chat.seq.kind.can_cut else TAIL)
    edited = [*prompt[:-1], msg(12)]
    assert chat.run(edited, reply=ANSWER) == len(msg(12) + GEN)


def test_alternating_conversations_resume_from_parked_checkpoints(model):
    chat = Chat(model)
    a, b = [SYSTEM_A, msg(10)], [SYSTEM_B, msg(20)]
    chat.run(a, reply=ANSWER)
    chat.run(b, reply=ANSWER)
    for turn in range(3):
        a += [GEN + ANSWER + END, msg(11 + turn)]
        assert chat.run(a, reply=ANSWER) == TAIL + len(ANSWER + END + msg(11 + turn) + GEN), f"A turn {turn + 2}"
        b += [GEN + ANSWER + END, msg(21 + turn)]
        assert chat.run(b, reply=ANSWER) == TAIL + len(ANSWER + END + msg(21 + turn) + GEN), f"B turn {turn + 2}"


def test_without_checkpoints_a_hybrid_model_evaluates_everything_again(model):
    chat = Chat(model, budget=0)
    history = [SYSTEM_A, msg(10)]
    chat.run(history, reply=THINK + ANSWER)
    evaluated = chat.run([*history, GEN + ANSWER + END, msg(11)], reply=ANSWER)
    can_cut = chat.seq.kind.can_cut
    assert can_cut == (model.meta("general.architecture") == "llama")
    total = len(SYSTEM_A + msg(10) + GEN + ANSWER + END + msg(11) + GEN)
    assert evaluated == (len(ANSWER + END + msg(11) + GEN) if can_cut else total)


def test_a_state_llama_cpp_refuses_is_not_used(model, tiny_model, tiny_qwen35):
    """A full checkpoint of the other model (other layers and shapes) is refused by llama.cpp: the prompt
    is evaluated normally and the answer is the model's own."""
    other_path = tiny_qwen35 if model.meta("general.architecture") == "llama" else tiny_model
    other = NativeModel(other_path, LoadOptions(n_ctx=2048, n_threads=1))
    try:
        foreign = Chat(other)
        prompt = [SYSTEM_A, msg(10)]
        foreign.run(prompt, reply=[])
        state = foreign.seq.save_full()
    finally:
        other.close()
    chat = Chat(model)
    assert not restore_state(model.lib, model.ctx, 0, state.data, partial=False)
    chat.seq.store.put(Checkpoint(state.tokens, state.data, partial=False))
    tokens = [t for m in [*prompt, msg(11)] for t in m] + GEN
    assert chat.run([*prompt, msg(11)], reply=[]) == len(tokens)
    assert chat.seq.cached == tokens


def test_checkpoint_cost_for_doctor(model):
    from localchat.engine.llama.sequence import measure_checkpoint_cost

    cost = measure_checkpoint_cost(model.lib, model.ctx, model.model, swa_full=True, probe_tokens=msg(7, 32))
    hybrid = model.meta("general.architecture") == "qwen35"
    assert cost.kind.can_cut is not hybrid
    assert (cost.partial_bytes > 0) is hybrid  # tiny qwen35: 3 DeltaNet layers x 4 heads x 32x32 f32 + conv
    if hybrid:
        assert cost.partial_bytes >= 3 * 4 * 32 * 32 * 4
    # K and V in f16 of every attention layer per token (tiny llama: 2 layers x 256; tiny qwen35: 1 x 128),
    # and a few bytes of cell metadata (position, sequences)
    kv = 1 * 2 * 128 * 2 if hybrid else 2 * 2 * 256 * 2
    assert kv <= cost.full_bytes_per_token <= kv + 32
    assert model.lib.llama_memory_seq_pos_max(model.mem, 0) == -1  # the probe left the sequence empty
