"""How many layers to put on the GPU: `n_gpu_layers: auto` sized from the GGUF header and free VRAM (stdlib only).

llama.cpp offloads the *last* n layers of a model (layer i goes to the GPU when i >= n_layer - n), and with
n > n_layer the output layer too; each offloaded layer keeps its K/V cache on the GPU. So one offloaded layer
costs its weights plus its share of the KV cache of the chosen context, and the output layer costs its
weights (the token embedding itself when the output is tied to it). Compute buffers and the driver's own
allocations need room as well; they are estimated here, conservatively, from the same metadata.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Bytes per element of the KV cache for each cache type: f16 = 2; q8_0 = 34 bytes per 32; q4_0 = 18 per 32.
KV_BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
MIN_HEADROOM = 256 << 20  # driver, cuBLAS workspace, fragmentation: kept free whatever the model
HEADROOM_FRACTION = 0.05  # ... or this share of the free memory, whichever is larger

_BLOCK = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class OffloadPlan:
    n_gpu_layers: int  # what llama.cpp gets: -1 = every layer and the output layer, 0 = CPU only
    reason: str  # one line for ModelInfo.notes and `localchat doctor`
    need_bytes: int = 0  # GPU memory the plan expects to use (0 when not sized)
    free_bytes: int | None = None  # free GPU memory it was sized against

    @property
    def note(self) -> str:
        return self.reason


@dataclass(frozen=True)
class ModelShape:
    """What sizing needs from a GGUF header."""

    n_layer: int
    layer_bytes: list[int]  # weights of each block, in layer order
    output_bytes: int  # output layer (+ final norm) weights
    n_embd: int
    n_head: int
    n_embd_k_gqa: int  # K width per token per layer (key_length * kv heads)
    n_embd_v_gqa: int
    n_vocab: int

    @classmethod
    def from_gguf(cls, info) -> "ModelShape":
        """From a localchat.gguf.GGUFInfo (its tensor table and `{arch}.*` metadata)."""
        arch = info.architecture
        meta = info.metadata

        def num(key: str, default: int = 0) -> int:
            value = meta.get(f"{arch}.{key}")
            return value if isinstance(value, int) and not isinstance(value, bool) else default

        n_layer = num("block_count")
        n_embd = num("embedding_length")
        n_head = num("attention.head_count") or 1
        n_head_kv = num("attention.head_count_kv", n_head) or n_head  # an array (per layer) falls back to n_head
        head_k = num("attention.key_length", n_embd // n_head)
        head_v = num("attention.value_length", n_embd // n_head)
        layers = [0] * n_layer
        output = 0
        embd = 0
        for t in info.tensors:
            m = _BLOCK.match(t.name)
            if m and int(m.group(1)) < n_layer:
                layers[int(m.group(1))] += t.nbytes
            elif t.name.startswith("output"):  # output.weight, output_norm.weight
                output += t.nbytes
            elif t.name == "token_embd.weight":
                embd = t.nbytes
        if not any(t.name == "output.weight" for t in info.tensors):
            output += embd  # tied embeddings: llama.cpp puts a copy of token_embd on the output layer's device
        tokens = meta.get("tokenizer.ggml.tokens")
        n_vocab = len(tokens) if tokens is not None and hasattr(tokens, "__len__") else num("vocab_size", 32000)
        return cls(n_layer, layers, output, n_embd, n_head, head_k * n_head_kv, head_v * n_head_kv, n_vocab)


def kv_bytes_per_layer(shape: ModelShape, n_ctx: int, kv_type: str) -> int:
    """K and V cache of one layer for n_ctx tokens."""
    return int(n_ctx * (shape.n_embd_k_gqa + shape.n_embd_v_gqa) * KV_BYTES_PER_ELEMENT[kv_type])


def compute_bytes(shape: ModelShape, n_ctx: int, n_ubatch: int, flash_attn: str) -> int:
    """Estimate of the GPU compute buffer: logits and activations of one ubatch, plus the K*Q scores
    (f32, every head) when attention runs without flash attention."""
    n = n_ubatch * 4 * (shape.n_vocab + 8 * shape.n_embd)
    if flash_attn == "off":
        n += n_ubatch * n_ctx * shape.n_head * 4
    return n


def plan_offload(
    info,
    n_ctx: int,
    kv_type: str,
    free_vram_bytes: int | None,
    *,
    requested: int | str = "auto",
    offload_supported: bool = True,
    flash_attn: str = "auto",
    n_ubatch: int = 512,
) -> OffloadPlan:
    """Decide n_gpu_layers before loading.

    info: a GGUFInfo (or None when the header is unknown); free_vram_bytes: free memory summed over the GPU
    devices llama.cpp sees (None: it could not say; 0: no GPU device). A number (or 0, or -1 = all) in
    `requested` overrides the sizing; "auto" fits as many layers as leave room for their KV cache at n_ctx.
    """
    if requested != "auto":
        n = int(requested)
        if n != 0 and not offload_supported:
            return OffloadPlan(0, f"n_gpu_layers {n} ignored: this llama.cpp build has no GPU offload (CPU only)")
        return OffloadPlan(n, f"n_gpu_layers {'-1 (all)' if n < 0 else n} as requested")
    if not offload_supported:
        return OffloadPlan(0, "n_gpu_layers auto: 0, this llama.cpp build has no GPU offload (CPU only)")
    if free_vram_bytes is not None and free_vram_bytes <= 0:
        return OffloadPlan(0, "n_gpu_layers auto: 0, llama.cpp sees no GPU device with free memory", free_bytes=0)
    if info is None or free_vram_bytes is None:
        what = "the model's header" if info is None else "the GPU's free memory"
        return OffloadPlan(-1, f"n_gpu_layers auto: all layers (could not read {what} to size the offload)",
                           free_bytes=free_vram_bytes)
    shape = info if isinstance(info, ModelShape) else ModelShape.from_gguf(info)
    if shape.n_layer <= 0:
        return OffloadPlan(-1, "n_gpu_layers auto: all layers (the header gives no block count to size the offload)",
                           free_bytes=free_vram_bytes)

    kv = kv_bytes_per_layer(shape, n_ctx, kv_type)
    fixed = compute_bytes(shape, n_ctx, n_ubatch, flash_attn) + max(MIN_HEADROOM, int(free_vram_bytes * HEADROOM_FRACTION))
    budget = free_vram_bytes - fixed
    full = sum(shape.layer_bytes) + shape.output_bytes + kv * shape.n_layer
    context = f"n_ctx {n_ctx}, KV {kv_type} {_gib(kv * shape.n_layer)}"
    if full <= budget:
        return OffloadPlan(-1, f"n_gpu_layers auto: all {shape.n_layer} layers + output on the GPU "
                               f"(needs {_gib(full + fixed)} with {context}; {_gib(free_vram_bytes)} free)",
                           full + fixed, free_vram_bytes)
    n, used = 0, 0
    for layer in reversed(shape.layer_bytes):  # llama.cpp offloads the last layers first
        if used + layer + kv > budget:
            break
        used += layer + kv
        n += 1
    if n == 0:
        return OffloadPlan(0, f"n_gpu_layers auto: 0, not one layer fits ({_gib(free_vram_bytes)} free, one layer with "
                              f"its KV cache needs {_gib(shape.layer_bytes[-1] + kv + fixed)}; {context})",
                           0, free_vram_bytes)
    return OffloadPlan(n, f"n_gpu_layers auto: {n} of {shape.n_layer} layers on the GPU, the rest on the CPU "
                          f"(all would need {_gib(full + fixed)}, {_gib(free_vram_bytes)} free; {context}; "
                          "a smaller n_ctx or kv_type q8_0 fits more)",
                       used + fixed, free_vram_bytes)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"
