"""The checkpoint store (RAM budget, LRU, which checkpoint a prompt may use) and the disk format's checks."""

from __future__ import annotations

import pytest

from localchat.engine.checkpoints import (
    Checkpoint,
    CheckpointKey,
    CheckpointRejected,
    CheckpointStore,
    default_budget,
    model_identity,
    read_checkpoint,
    settings_fingerprint,
    write_checkpoint,
)

KEY = CheckpointKey("model-a", "qwen3.5", settings_fingerprint(n_ctx=4096, kv_type="f16", flash_attn=True))


def ckpt(tokens, partial=False, seq_id=0, size=100):
    return Checkpoint(tuple(tokens), b"x" * size, partial, seq_id)


def test_best_picks_the_longest_prefix_of_the_prompt():
    store = CheckpointStore(budget=10_000)
    store.put(ckpt([1, 2]))
    store.put(ckpt([1, 2, 3, 4]))
    store.put(ckpt([1, 2, 9, 9, 9]))  # diverges from the prompt: never offered
    assert store.best([1, 2, 3, 4, 5], seq_id=0, cached=[]).tokens == (1, 2, 3, 4)
    assert store.best([1, 2, 3, 7], seq_id=0, cached=[]).tokens == (1, 2)
    assert store.best([5, 6], seq_id=0, cached=[]) is None


def test_limit_leaves_a_token_to_evaluate():
    store = CheckpointStore(budget=10_000)
    store.put(ckpt([1, 2]))
    store.put(ckpt([1, 2, 3]))
    # Regenerate: the same prompt again; the last token must be evaluated for its logits.
    assert store.best([1, 2, 3], seq_id=0, cached=[], limit=2).tokens == (1, 2)


def test_partial_checkpoints_bind_to_their_sequence_and_its_cache():
    store = CheckpointStore(budget=10_000)
    store.put(ckpt([1, 2, 3], partial=True, seq_id=0))
    prompt = [1, 2, 3, 4]
    assert store.best(prompt, seq_id=0, cached=[1, 2, 3, 8, 8]).tokens == (1, 2, 3)
    assert store.best(prompt, seq_id=1, cached=[1, 2, 3, 8, 8]) is None  # another slot's recurrent state
    assert store.best(prompt, seq_id=0, cached=[1, 2, 7]) is None  # its attention K/V are gone
    store.put(ckpt([1, 2], partial=False, seq_id=0))
    assert store.best(prompt, seq_id=1, cached=[]).tokens == (1, 2)  # a full one serves any sequence


def test_invalidate_drops_partials_the_sequence_no_longer_holds():
    store = CheckpointStore(budget=10_000)
    store.put(ckpt([1, 2], partial=True))
    store.put(ckpt([1, 2, 3, 4], partial=True))
    store.put(ckpt([1, 2, 3, 4], partial=False))
    store.put(ckpt([1, 2, 3, 4], partial=True, seq_id=1))
    store.invalidate(0, cached=[1, 2, 5])
    left = sorted((c.tokens, c.partial, c.seq_id) for c in store)
    assert left == [((1, 2), True, 0), ((1, 2, 3, 4), False, 0), ((1, 2, 3, 4), True, 1)]


def test_budget_drops_the_least_recently_used_first():
    store = CheckpointStore(budget=350)
    a, b, c = ckpt([1], size=96), ckpt([2], size=96), ckpt([3], size=96)
    for x in (a, b, c):
        assert store.put(x)
    assert store.best([1, 0], seq_id=0, cached=[]) is a  # a is now the most recently used
    store.put(ckpt([4], size=96))
    assert {x.tokens for x in store} == {(1,), (3,), (4,)}
    assert store.used == 300 <= store.budget
    assert not store.put(ckpt([5], size=1000))  # larger than the whole budget: refused, nothing dropped
    assert len(store) == 3


def test_same_tokens_replace_the_older_checkpoint():
    store = CheckpointStore(budget=10_000)
    store.put(ckpt([1, 2], size=10))
    store.put(ckpt([1, 2], size=20))
    assert len(store) == 1 and store.used == 20 + 8


def test_disk_round_trip(tmp_path):
    c = Checkpoint((5, 6, 7), bytes(range(256)) * 3, partial=False)
    path = write_checkpoint(tmp_path / "conv" / "1.ckpt", KEY, c)
    back = read_checkpoint(path, KEY, seq_id=2)
    assert (back.tokens, back.data, back.partial, back.seq_id) == (c.tokens, c.data, False, 2)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "append", "empty"])
def test_damaged_file_is_refused(tmp_path, damage):
    path = write_checkpoint(tmp_path / "c.ckpt", KEY, Checkpoint((1, 2), b"state" * 50, False))
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[60] ^= 0xFF
    elif damage == "append":
        raw += b"\0"
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointRejected):
        read_checkpoint(path, KEY)


@pytest.mark.parametrize("other", [
    CheckpointKey("model-b", KEY.template, KEY.settings),
    CheckpointKey(KEY.model, "chatml", KEY.settings),
    CheckpointKey(KEY.model, KEY.template, settings_fingerprint(n_ctx=8192, kv_type="f16", flash_attn=True)),
])
def test_checkpoint_of_another_model_template_or_settings_is_refused(tmp_path, other):
    path = write_checkpoint(tmp_path / "c.ckpt", KEY, Checkpoint((1, 2), b"state", False))
    with pytest.raises(CheckpointRejected, match="another model"):
        read_checkpoint(path, other)


def test_settings_fingerprint_ignores_order():
    assert settings_fingerprint(a=1, b="x") == settings_fingerprint(b="x", a=1) != settings_fingerprint(a=2, b="x")


def test_model_identity_tells_files_apart(tmp_path):
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    a.write_bytes(b"GGUF" + b"\1" * 3_000_000)
    b.write_bytes(b"GGUF" + b"\1" * 3_000_000)
    c.write_bytes(b"GGUF" + b"\1" * 2_999_999 + b"\2")
    assert model_identity(a) == model_identity(b) != model_identity(c)


def test_default_budget_follows_free_memory_within_bounds():
    assert default_budget(8 << 30) == 1 << 30
    assert default_budget(100 << 20) == 64 << 20
    assert default_budget(1 << 40) == 4 << 30
    assert default_budget() >= 64 << 20


def test_has_full_sees_only_full_checkpoints_of_exactly_those_tokens():
    store = CheckpointStore(budget=10_000)
    store.put(ckpt([1, 2], partial=True))
    store.put(ckpt([1, 2, 3]))
    assert store.has_full([1, 2, 3]) and not store.has_full([1, 2]) and not store.has_full([1, 2, 3, 4])


def test_checkpoint_ram_load_option():
    from localchat.config import Config
    from localchat.errors import ConfigError
    from localchat.types import LoadOptions

    assert LoadOptions().checkpoint_ram is None  # a default from free memory
    assert Config(load={"checkpoint_ram": 0}).load_options_for(None).checkpoint_ram == 0
    assert Config(models={"q": {"load": {"checkpoint_ram": 1 << 30}}}).load_options_for("q").checkpoint_ram == 1 << 30
    for bad in (-1, "2GiB", True, 1.5):
        with pytest.raises(ConfigError, match="checkpoint_ram"):
            LoadOptions(checkpoint_ram=bad).validate()


def test_token_offsets_map_message_boundaries_to_token_counts():
    from localchat.engine.checkpoints import token_offsets

    # "<|im_start|>" (12 bytes, one token) "user\n" (5: two tokens) "hé" (3: one token) "<|im_end|>" (10)
    pieces = [12, 4, 1, 3, 10]
    assert token_offsets(pieces, [0, 12, 17, 20, 30]) == [0, 1, 3, 4, 5]
    assert token_offsets(pieces, [18, 19]) == [3, 3]  # inside "hé": the token's start
