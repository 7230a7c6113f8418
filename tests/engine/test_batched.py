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
    sampling = SamplingParams(temperature=0.0, max_tokens=24)
    single = EngineClient.start(random_model, LoadOptions(n_ctx=512, n_threads=1), tmp_path)
    try:
        alone = [single.generate(prompt(i), sampling) for i in range(6)]
        expected = ["".join(e.text for e in g) for g in alone]  # type: ignore[attr-defined]
    finally:
        single.close()
    engine = EngineClient.start(random_model, LoadOptions(n_ctx=512, n_threads=1, parallel=4), tmp_path)
    try:
        assert engine.info.parallel == 4 and engine.info.n_ctx == 512
        got: dict[int, str] = {}

        def ask(i: int) -> None:
            g = engine.generate(prompt(i), sampling)
            got[i] = "".join(e.text for e in g)  # type: ignore[attr-defined]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [got.get(i) for i in range(6)] == expected
        with pytest.raises(EngineContextOverflow, match="parallel slot"):
            list(engine.generate("seven " * 600, sampling))
    finally:
        engine.close()
