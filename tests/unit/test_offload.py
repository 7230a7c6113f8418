"""n_gpu_layers auto: sizing the GPU offload from a GGUF header and free VRAM (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localchat.engine.offload import ModelShape, kv_bytes_per_layer, plan_offload
from localchat.gguf import GGUFInfo, TensorInfo

GB = 1 << 30
MB = 1 << 20


def llama7b_q4_k_m(n_head_kv: int = 32, tied: bool = False) -> GGUFInfo:
    """A Llama-2-7B-shaped Q4_K_M header: 32 blocks of ~120 MB, q6_K output, 4.0 GB in all."""
    tensors, offset = [], 0

    def add(name: str, nbytes: int) -> None:
        nonlocal offset
        tensors.append(TensorInfo(name, (1,), 12, offset, nbytes))
        offset += nbytes

    add("token_embd.weight", 70 * MB)
    for i in range(32):
        for part, size in (("attn_q", 10), ("attn_k", 10), ("attn_v", 14), ("attn_output", 10),
                           ("ffn_gate", 24), ("ffn_up", 24), ("ffn_down", 28)):
            add(f"blk.{i}.{part}.weight", size * MB)
    add("output_norm.weight", 16 << 10)
    if not tied:
        add("output.weight", 105 * MB)
    meta = {"general.architecture": "llama", "llama.block_count": 32, "llama.embedding_length": 4096,
            "llama.attention.head_count": 32, "llama.attention.head_count_kv": n_head_kv,
            "llama.context_length": 4096, "llama.vocab_size": 32000}
    return GGUFInfo(Path("llama-7b.Q4_K_M.gguf"), 3, meta, tensors, 0, 32, offset)


def test_shape_from_header():
    shape = ModelShape.from_gguf(llama7b_q4_k_m(n_head_kv=8))
    assert shape.n_layer == 32
    assert shape.layer_bytes == [120 * MB] * 32
    assert shape.output_bytes == 105 * MB + (16 << 10)
    assert (shape.n_embd_k_gqa, shape.n_embd_v_gqa) == (1024, 1024)  # GQA: 8 KV heads of 128
    assert ModelShape.from_gguf(llama7b_q4_k_m(tied=True)).output_bytes == 70 * MB + (16 << 10)


def test_kv_cache_size_by_type():
    shape = ModelShape.from_gguf(llama7b_q4_k_m())
    assert kv_bytes_per_layer(shape, 4096, "f16") == 64 * MB  # 4096 tokens * 8192 values * 2 bytes
    assert kv_bytes_per_layer(shape, 4096, "q8_0") == 34 * MB
    assert kv_bytes_per_layer(shape, 4096, "q4_0") == 18 * MB


def test_7b_fits_whole_in_24_gb():
    plan = plan_offload(llama7b_q4_k_m(), 4096, "f16", 24 * GB)
    assert plan.n_gpu_layers == -1
    assert "all 32 layers" in plan.reason
    assert 6 * GB < plan.need_bytes < 24 * GB  # 3.9 GB of layers + 2 GB KV + buffers


def test_7b_in_4_gb_gets_part_of_its_layers():
    plan = plan_offload(llama7b_q4_k_m(), 4096, "f16", 4 * GB)
    assert 10 < plan.n_gpu_layers < 32
    assert plan.need_bytes <= 4 * GB
    assert f"{plan.n_gpu_layers} of 32 layers" in plan.reason
    # Exactly one more layer's worth (weights + its KV cache, plus 5% headroom) fits one more layer.
    more = plan_offload(llama7b_q4_k_m(), 4096, "f16", 4 * GB + 200 * MB)
    assert more.n_gpu_layers == plan.n_gpu_layers + 1


def test_longer_context_or_larger_cache_leaves_fewer_layers():
    info = llama7b_q4_k_m()
    at_4k = plan_offload(info, 4096, "f16", 4 * GB).n_gpu_layers
    at_1k = plan_offload(info, 1024, "f16", 4 * GB).n_gpu_layers
    q8 = plan_offload(info, 4096, "q8_0", 4 * GB).n_gpu_layers
    assert at_1k > at_4k
    assert q8 > at_4k
    # Without flash attention the K*Q scores need room too.
    assert plan_offload(info, 4096, "f16", 4 * GB, flash_attn="off").n_gpu_layers < at_4k


def test_tiny_vram_gets_nothing():
    plan = plan_offload(llama7b_q4_k_m(), 4096, "f16", 300 * MB)
    assert plan.n_gpu_layers == 0
    assert "not one layer fits" in plan.reason


def test_no_gpu_means_cpu_with_a_reason():
    plan = plan_offload(llama7b_q4_k_m(), 4096, "f16", 0)
    assert plan.n_gpu_layers == 0 and "no GPU device" in plan.reason
    plan = plan_offload(llama7b_q4_k_m(), 4096, "f16", 24 * GB, offload_supported=False)
    assert plan.n_gpu_layers == 0 and "CPU only" in plan.reason


@pytest.mark.parametrize("requested, expected", [(0, 0), (12, 12), (-1, -1)])
def test_a_number_overrides_the_sizing(requested, expected):
    plan = plan_offload(llama7b_q4_k_m(), 4096, "f16", 300 * MB, requested=requested)
    assert plan.n_gpu_layers == expected
    assert "as requested" in plan.reason


def test_a_number_on_a_cpu_build_is_ignored_with_a_reason():
    plan = plan_offload(None, 4096, "f16", None, requested=12, offload_supported=False)
    assert plan.n_gpu_layers == 0 and "ignored" in plan.reason


def test_unknown_free_memory_offloads_everything_and_says_so():
    plan = plan_offload(llama7b_q4_k_m(), 4096, "f16", None)
    assert plan.n_gpu_layers == -1 and "free memory" in plan.reason


def test_real_header_of_the_tiny_model(tiny_model):
    from localchat.gguf import read_gguf

    info = read_gguf(tiny_model)
    shape = ModelShape.from_gguf(info)
    assert shape.n_layer == info.block_count and all(b > 0 for b in shape.layer_bytes)
    assert plan_offload(info, 512, "f16", 8 * GB).n_gpu_layers == -1
