"""The worker with parallel slots (continuous batching) on a tiny random-weight model: several generations
at once through one EngineClient, each equal to the same prompt answered by the single-stream path."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from localchat.engine.client import EngineClient
from localchat.errors import EngineContextOverflow
from localchat.types import LoadOptions, SamplingParams

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "qwen2-tiny.gguf"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_shaped_gguf.py"), "qwen2-tiny", str(out),
                    "--dtype", "f32"], check=True)
    return out


def prompt(i: int) -> str:
    return f"<|im_start|>user\nquestion {i}: " + "seven " * (i * 3) + "<|im_end|>\n<|im_start|>assistant\n"


def test_parallel_replies_equal_the_single_stream_path(random_model, tmp_path):
    # replies of different lengths: slots fall free mid-run, and with a KV stream per slot the replies above
    # a freed one move down into it (llama.cpp copies the stream); the second round's prompts continue the
    # first round's, so they find their caches wherever those moved
    sampling = [SamplingParams(temperature=0.0, max_tokens=4 + 10 * (i % 3)) for i in range(6)]
    single = EngineClient.start(random_model, LoadOptions(n_ctx=512, n_threads=1), tmp_path)

    def text(g) -> str:
        return "".join(e.text for e in g)  # type: ignore[attr-defined]

    try:
        expected = [text(single.generate(prompt(i), sampling[i])) for i in range(6)]
        followups = [prompt(i) + expected[i] + "<|im_end|>\n<|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n"
                     for i in range(6)]
        expected += [text(single.generate(followups[i], sampling[i])) for i in range(6)]
    finally:
        single.close()
    engine = EngineClient.start(random_model, LoadOptions(n_ctx=512, n_threads=1, parallel=4), tmp_path)
    try:
        assert engine.info.parallel == 4 and engine.info.n_ctx == 512
        assert "parallel 4: a KV cache per reply" in engine.info.notes
        got: dict[int, str] = {}

        def ask(i: int) -> None:
            got[i] = text(engine.generate(prompt(i) if i < 6 else followups[i - 6], sampling[i % 6]))

        for first in (0, 6):
            threads = [threading.Thread(target=ask, args=(i,)) for i in range(first, first + 6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        assert [got.get(i) for i in range(12)] == expected
        with pytest.raises(EngineContextOverflow, match="parallel slot"):
            list(engine.generate("seven " * 600, sampling[0]))
    finally:
        engine.close()


# A Qwen3.5-style generation prompt ends "<think>\n" (one byte stands in for it in the tiny vocabulary), and
# the history renders the reply without it: each next turn leaves the cache TAIL tokens before its end.
THINK = "<|im_start|>assistant\n\t"


def turn(i: int, who: str) -> str:
    return f"<|im_start|>user\n{who} asks question {i}: tell me something about the number {i}<|im_end|>\n"


@pytest.mark.parametrize("ram", [None, 0])
def test_interleaved_conversations_on_a_hybrid_model_resume_from_checkpoints(start, ram, tmp_path_factory):
    """Two conversations take turns on a qwen35 model (recurrent state: its cache cannot be cut back) through
    the batched path: each returns to its own slot and resumes from the checkpoint TAIL tokens before its
    previous prompt's end, so only those and the new turn are evaluated; without checkpoints, everything."""
    from localchat.engine.llama.sequence import TAIL
    from tests.support.ggufgen import make_tiny_qwen35_gguf

    model = make_tiny_qwen35_gguf(tmp_path_factory.mktemp("models") / "tiny-qwen35.gguf")
    client = start(model, parallel=2, n_threads=1, checkpoint_ram=ram)
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    history = {who: f"<|im_start|>system\nconversation {who}<|im_end|>\n" for who in "AB"}
    answers: dict[str, str] = {}
    evaluated: dict[str, list[tuple[int, int, int]]] = {"A": [], "B": []}  # (evaluated, prompt, new tokens)
    for i in range(1, 4):
        for who in "AB":
            if who in answers:  # the previous reply as the template renders it into the history
                history[who] += f"<|im_start|>assistant\n{answers[who]}<|im_end|>\n"
            new = (f"{answers[who]}<|im_end|>\n" if who in answers else "") + turn(i, who) + THINK
            history[who] += turn(i, who)
            with client.generate(history[who] + THINK, greedy) as gen:
                answers[who] = "".join(e.text for e in gen)  # type: ignore[attr-defined]
            usage = gen.usage
            evaluated[who].append((usage.prompt_eval_tokens, usage.prompt_tokens, client.count_tokens([new])[0]))
    for who in "AB":
        first, *later = evaluated[who]
        assert first[0] == first[1]
        for n_eval, n_prompt, n_new in later:
            if ram == 0:  # without checkpoints a prompt that leaves the cache is evaluated whole
                assert n_eval == n_prompt
            else:  # from the checkpoint TAIL tokens before the previous prompt's end
                assert n_eval <= n_new + TAIL < n_prompt, (who, evaluated)
