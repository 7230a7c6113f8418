"""Mutated GGUF files through the whole load path: our reader, then an engine worker for those it passes.

Every case ends in a clear refusal (GGUFError from our reader, ModelLoadError from llama.cpp in the
worker), a worker that died with a WorkerCrashed message, or a clean load that can generate; this test
process (the parent) never dies. `scripts/fuzz load` runs the same cases at a larger scale.
"""

from __future__ import annotations

import collections
import random
import struct

import pytest

from tests.support import ggufmutate as gm
from tests.support.loadcase import OUTCOMES, load_inputs, load_outcome

SEEDS = range(4)
PER_SEED = 9  # three of each kind of mutation


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    counts: collections.Counter = collections.Counter()
    results = []
    for seed in SEEDS:
        for i, (data, _) in enumerate(load_inputs(random.Random(f"load:{seed}"), PER_SEED)):
            result = load_outcome(data, tmp_path_factory.mktemp(f"case{seed}-{i}"))
            counts[result.outcome] += 1
            results.append(result)
    return counts, results


def test_every_mutated_file_ends_in_a_refusal_or_a_load(outcomes):
    counts, results = outcomes
    assert set(counts) <= set(OUTCOMES)
    assert sum(counts.values()) == len(SEEDS) * PER_SEED
    assert all(r.message.strip() for r in results)
    # the seed set reaches both ends of the load path: our reader and a worker
    assert counts["refused"] > 0
    assert counts["loaded"] + counts["refused-load"] + counts["crashed-worker"] > 0


def test_the_unmutated_model_loads_and_generates(tmp_path):
    result = load_outcome(gm.tiny_gguf_bytes(), tmp_path)
    assert result.outcome == "loaded" and result.message.startswith("generated")


def _offsets(data: bytes) -> list[gm.Field]:
    return [f for f in gm.layout(data).fields if f.kind == "offset"]


def test_all_tensors_at_the_same_offset(tmp_path):
    base = gm.tiny_gguf_bytes()
    buf = bytearray(base)
    for f in _offsets(base):
        buf[f.offset:f.offset + 8] = struct.pack("<Q", 0)
    result = load_outcome(bytes(buf), tmp_path)
    assert result.outcome == "refused", result
    assert "overlap" in result.message


@pytest.mark.parametrize("cut", [24, 100, 1000, -1])
def test_truncated_model_is_refused_by_our_reader(tmp_path, cut):
    base = gm.tiny_gguf_bytes()
    result = load_outcome(base[:cut], tmp_path)
    assert result.outcome == "refused"
    assert "truncated" in result.message or "ends" in result.message, result.message
