"""The shipped catalog's reasoning-model entries (issue 14)."""

import pytest

from localchat.catalog import ModelCatalog
from localchat.errors import UnknownModelError

REASONING_IDS = ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-4b-instruct-2507", "qwen3-4b-thinking-2507",
                 "qwen3.5-0.8b", "qwen3.5-2b", "qwen3.5-4b", "qwen3.5-9b", "qwen3-coder-30b-a3b-instruct")


def test_todays_qwen_models_are_listed_with_both_hubs_and_their_own_template():
    cat = ModelCatalog.load()
    for model_id in REASONING_IDS:
        entry = cat.get(model_id)
        assert {s.kind for s in entry.sources} == {"hf", "modelscope"}, model_id
        assert entry.quant and entry.size and entry.size > 100_000_000 and entry.context, model_id
        assert entry.template == "gguf", f"{model_id}: the file's own template carries the thinking switch"
        assert entry.main_file.endswith(".gguf") and entry.quant in entry.main_file, model_id
    assert "qwen2.5-7b-instruct" in cat, "the Qwen2.5 entries stay"


def test_a_partial_id_suggests_the_ids_that_contain_it_first():
    with pytest.raises(UnknownModelError) as err:
        ModelCatalog.load().get("qwen3-4b-thinking")
    assert err.value.hint.startswith("did you mean qwen3-4b-thinking-2507")
