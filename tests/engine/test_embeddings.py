"""Embeddings through the engine: the decode in this process (pooling, batching) and through the worker
(EngineClient.embed, the frames, the typed errors); the real SmolLM2 ranks a paraphrase first."""

from __future__ import annotations

import math

import pytest

from localchat.engine.llama.embedding import POOLING_MEAN
from localchat.engine.llama.model import NativeModel
from localchat.errors import EngineContextOverflow, EngineRequestError
from localchat.types import LoadOptions
from tests.support.embedgen import PARAPHRASES, UNRELATED, make_tiny_embedding_gguf


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def native_embedder(tiny_embedding_model):
    model = NativeModel(tiny_embedding_model, LoadOptions(n_ctx=512, n_gpu_layers=0))
    yield model
    model.close()


def test_a_paraphrase_ranks_above_an_unrelated_sentence(native_embedder):
    a, b, other = native_embedder.embed([*PARAPHRASES, UNRELATED], truncate=False).vectors
    assert cosine(a, b) > cosine(a, other) + 0.1
    assert all(abs(math.fsum(v * v for v in vec) - 1.0) < 1e-6 for vec in (a, b, other))  # L2-normalised


def test_inputs_share_one_decode_and_match_their_single_vectors(native_embedder):
    texts = [*PARAPHRASES, UNRELATED]
    singles = [native_embedder.embed([t], truncate=False).vectors[0] for t in texts]
    before = native_embedder._embedder.decodes
    result = native_embedder.embed(texts, truncate=False)
    assert native_embedder._embedder.decodes == before + 1
    for one, batched in zip(singles, result.vectors):
        assert max(abs(x - y) for x, y in zip(one, batched)) < 1e-5
    assert result.prompt_tokens == sum(len(native_embedder.embed_tokens(t)) for t in texts)


def test_inputs_beyond_one_window_take_more_decodes_in_order(native_embedder):
    window = native_embedder._embedder.n_ctx
    long = "cat " * (window // 4)  # half the window: a long, a short and a long do not fit together
    texts = [long, PARAPHRASES[0], long, UNRELATED]
    before = native_embedder._embedder.decodes
    vectors = native_embedder.embed(texts, truncate=False).vectors
    assert native_embedder._embedder.decodes - before == 2
    assert vectors[1] == pytest.approx(native_embedder.embed([PARAPHRASES[0]], truncate=False).vectors[0], abs=1e-5)


def test_too_long_names_its_index_tokens_and_the_limit_unless_truncated(native_embedder):
    window = native_embedder._embedder.n_ctx
    with pytest.raises(EngineContextOverflow) as info:
        native_embedder.embed(["cat", "cat " * window], truncate=False)
    assert f"input[1] is {2 * window} tokens" in info.value.message and f"at most {window}" in info.value.message
    cut = native_embedder.embed(["cat " * window], truncate=True)
    assert cut.prompt_tokens == window


def test_empty_input_is_a_request_error(native_embedder):
    with pytest.raises(EngineRequestError, match=r"input\[0\] has no tokens"):
        native_embedder.embed([""], truncate=False)


@pytest.mark.slow
def test_a_model_without_pooling_metadata_is_mean_pooled(tmp_path):
    model = NativeModel(make_tiny_embedding_gguf(tmp_path / "none.gguf", pooling=None), LoadOptions(n_ctx=512))
    try:
        a, b, other = model.embed([*PARAPHRASES, UNRELATED], truncate=False).vectors
        assert model._embedder.pooling == POOLING_MEAN
        assert cosine(a, b) > cosine(a, other)
    finally:
        model.close()


def test_the_worker_answers_embed_frames_with_typed_errors(start, tiny_embedding_model):
    engine = start(tiny_embedding_model, n_ctx=512)
    result = engine.embed([*PARAPHRASES, UNRELATED])
    a, b, other = result.vectors
    assert cosine(a, b) > cosine(a, other) and result.prompt_tokens > 3
    with pytest.raises(EngineContextOverflow, match=r"input\[0\] is 1024 tokens.*at most 512"):
        engine.embed(["cat " * 512])
    with pytest.raises(EngineRequestError, match="no tokens"):
        engine.embed(["ok", ""])
    assert len(engine.embed(["cat " * 512], truncate=True).vectors) == 1  # the worker carries on


def test_a_chat_model_embeds_beside_its_chat(start, tiny_model):
    from localchat.engine.api import answer_text
    from localchat.types import SamplingParams
    from tests.support.ggufgen import CHAT_PROMPT

    engine = start(tiny_model)
    before = answer_text(engine.generate(CHAT_PROMPT, SamplingParams(temperature=0)))
    vectors = engine.embed(["hello", "hello there"]).vectors
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 0
    assert answer_text(engine.generate(CHAT_PROMPT, SamplingParams(temperature=0))) == before


def test_smollm2_ranks_a_paraphrase_above_an_unrelated_sentence(start, smollm2_path):
    engine = start(smollm2_path, n_ctx=2048)
    pairs = [("How do I reset my password?", "What are the steps to reset my password?",
              "The weather in Paris is sunny."),
             ("The cat sat on the mat.", "A cat was sitting on the mat.", "Stock prices fell sharply today.")]
    for query, paraphrase, unrelated in pairs:
        q, p, u = engine.embed([query, paraphrase, unrelated]).vectors
        assert cosine(q, p) > cosine(q, u), (query, cosine(q, p), cosine(q, u))


def test_embeddings_run_beside_a_batched_generation(start, tiny_loop_model):
    """With parallel slots the decode thread generates while the worker's main thread embeds: two contexts
    on one model at once, neither disturbing the other."""
    from localchat.types import SamplingParams
    from tests.support.ggufgen import CHAT_PROMPT

    engine = start(tiny_loop_model, parallel=2)
    alone = engine.embed(["abc", "abcdefgh abc"]).vectors
    generation = engine.generate(CHAT_PROMPT, SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=3000))
    events = iter(generation)
    next(events)  # decoding has started
    for _ in range(5):
        beside = engine.embed(["abc", "abcdefgh abc"]).vectors
        assert max(abs(x - y) for a, b in zip(alone, beside) for x, y in zip(a, b)) < 1e-5
    generation.cancel()
    list(events)
    assert generation.finish_reason == "cancelled" and generation.text.startswith("abcdefgh")
