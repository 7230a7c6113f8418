"""JSON output under the grammar never holds a raw control character inside a string (no parser takes one)."""

from __future__ import annotations

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
