"""JSON output under the grammar never holds a raw control character inside a string (no parser takes one)."""

from __future__ import annotations

import pytest

from localchat.engine.api import answer_text
from localchat.structured import OutputConstraint
from localchat.types import SamplingParams
from tests.support.ggufgen import CHAT_PROMPT


def test_sampled_json_strings_hold_no_control_characters(start, tiny_model):
    """The tiny model's vocabulary holds every byte as a token; sampled at temperature 1 through the json
    grammar, llama-cpp-python's own string rule let \\x01 and raw newlines through."""
    engine = start(tiny_model, n_ctx=512)
    grammar = OutputConstraint("json").to_dict()
    text = ""
    for seed in range(6):
        text += answer_text(engine.generate(CHAT_PROMPT, SamplingParams(temperature=1.0, seed=seed, max_tokens=60,
                                                                        grammar=grammar)))
    assert text.count("{") >= 6
    assert not [c for c in text if ord(c) < 0x20 and c not in " "], repr(text)


@pytest.mark.parametrize("sampling", [SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=80),
                                      SamplingParams(temperature=0.9, seed=5, max_tokens=80)],
                         ids=["greedy", "sampled"])
def test_judging_the_best_candidates_first_picks_what_the_whole_vocabulary_would(smollm2_path, sampling):
    """A refused pick is retried among the best 512 / 4,096 tokens before the whole vocabulary: the reply is
    the same token for token as with the whole vocabulary every time."""
    from dataclasses import replace

    from localchat.engine.llama.model import NativeModel
    from localchat.structured import schema_constraint
    from localchat.types import LoadOptions

    schema = {"type": "object", "required": ["city", "reasons"], "additionalProperties": False,
              "properties": {"city": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string"}}}}
    prompt = ("<|im_start|>user\nName a city worth visiting and three reasons, as JSON.<|im_end|>\n"
              "<|im_start|>assistant\n")
    constrained = replace(sampling, grammar=schema_constraint(schema).to_dict())
    model = NativeModel(smollm2_path, LoadOptions(n_ctx=1024))
    try:
        fast = "".join(model.generate(prompt, constrained, lambda: False))
        model._grammar_need = lambda s: None  # every refused pick goes over the whole vocabulary
        full = "".join(model.generate(prompt, constrained, lambda: False))
    finally:
        model.close()
    assert fast == full and fast.startswith("{")


@pytest.mark.parametrize("sampling", [SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=40),
                                      SamplingParams(temperature=0.9, seed=5, max_tokens=40)],
                         ids=["greedy", "sampled"])
def test_the_allowed_tokens_remembered_from_a_whole_pass_pick_what_the_pass_would(smollm2_path, sampling):
    """The tokens a whole-vocabulary pass allowed at the start of a schema's JSON are remembered for the next
    reply under the same grammar: the replies are the same, the next ones without the passes."""
    from dataclasses import replace

    from localchat.engine.llama.model import NativeModel
    from localchat.structured import schema_constraint
    from localchat.types import LoadOptions

    schema = {"type": "object", "required": ["essay"], "additionalProperties": False,
              "properties": {"essay": {"type": "string", "minLength": 500}}}
    prompt = "<|im_start|>user\nWrite a poem.<|im_end|>\n<|im_start|>assistant\n"  # not asking for JSON
    constrained = replace(sampling, grammar=schema_constraint(schema).to_dict())
    model = NativeModel(smollm2_path, LoadOptions(n_ctx=1024))
    try:
        first = "".join(model.generate(prompt, constrained, lambda: False))
        memo = model._allowed_memo
        assert memo is not None and memo.hits == 0 and len(memo._entries) > 0
        again = ["".join(model.generate(prompt, constrained, lambda: False)) for _ in range(2)]
        assert memo.hits >= 2
    finally:
        model.close()
    assert again == [first, first] and first.startswith('{')
