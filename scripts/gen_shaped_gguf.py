"""Write a random-weight GGUF with the exact tensor shapes of a real model, for speed benchmarks.

Token rate depends on tensor shapes and types, not on the values, so a model too large to carry to a
benchmark machine can be generated there. Usage:
    python scripts/gen_shaped_gguf.py qwen2.5-0.5b OUT.gguf [--dtype f16]
    python scripts/gen_shaped_gguf.py qwen2.5-7b OUT.gguf
    python scripts/gen_shaped_gguf.py qwen3.5-0.8b OUT.gguf      # also qwen3.5-2b, -4b, -9b (llama.cpp `qwen35`)
    python scripts/gen_shaped_gguf.py qwen3.5-0.8b OUT.gguf --think   # <think> and </think> as tokens of their
                                                                      # own, as Qwen3's: the engine treats it as
                                                                      # a reasoning model (thought control on)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.ggufgen import BYTE_CHARS  # noqa: E402  GPT-2's byte -> character map

# Shapes from the models' own config.json.
SHAPES = {
    "qwen2.5-0.5b": dict(n_embd=896, n_layer=24, n_head=14, n_head_kv=2, n_ff=4864, n_vocab=151936, tied=True),
    "qwen2.5-1.5b": dict(n_embd=1536, n_layer=28, n_head=12, n_head_kv=2, n_ff=8960, n_vocab=151936, tied=True),
    "qwen2.5-7b": dict(n_embd=3584, n_layer=28, n_head=28, n_head_kv=4, n_ff=18944, n_vocab=152064, tied=False),
    # not a real model: small enough for tests, and its random weights answer each prompt differently
    "qwen2-tiny": dict(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=1024, tied=True,
                       scale=0.5),
}

# Qwen3.5 (llama.cpp architecture `qwen35`): 3 Gated DeltaNet (recurrent) layers, then 1 gated attention layer,
# repeated. From the models' config.json `text_config`: hidden_size, num_hidden_layers, num_attention_heads,
# num_key_value_heads, intermediate_size, linear_num_value_heads, tie_word_embeddings. Shared by all four:
# head_dim 256, partial_rotary_factor 0.25, mrope_section [11, 11, 10], linear_num_key_heads 16,
# linear_key_head_dim = linear_value_head_dim = 128, linear_conv_kernel_dim 4, vocab_size 248320.
QWEN35_SHAPES = {
    "qwen3.5-0.8b": dict(n_embd=1024, n_layer=24, n_head=8, n_head_kv=2, n_ff=3584, v_heads=16, tied=True),
    "qwen3.5-2b": dict(n_embd=2048, n_layer=24, n_head=8, n_head_kv=2, n_ff=6144, v_heads=16, tied=True),
    "qwen3.5-4b": dict(n_embd=2560, n_layer=32, n_head=16, n_head_kv=4, n_ff=9216, v_heads=32, tied=True),
    "qwen3.5-9b": dict(n_embd=4096, n_layer=32, n_head=16, n_head_kv=4, n_ff=12288, v_heads=32, tied=False),
}
QWEN35_COMMON = dict(head_dim=256, n_rot=64, sections=[11, 11, 10, 0], k_heads=16, head_k=128, d_conv=4,
                     n_vocab=248320, attn_interval=4)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class _Filler:
    """Random-looking values without generating billions of random numbers: tiles of one random block."""

    def __init__(self, seed: int = 0, scale: float = 0.02) -> None:
        self.block = (np.random.default_rng(seed).standard_normal(1 << 22) * scale).astype(np.float32)
        self.offset = 0

    def __call__(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        # each tensor starts where the last one ended, so small models' tensors differ from each other
        n = int(np.prod(shape))
        block = np.roll(self.block, -self.offset)
        self.offset = (self.offset + n) % self.block.size
        reps = -(-n // block.size)
        return np.tile(block, reps)[:n].reshape(shape).astype(dtype)


def _add_vocab(w, n_vocab: int, think: bool = False) -> None:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tags = ["<think>", "</think>"] if think else []  # USER_DEFINED (4), as in Qwen3's GGUFs
    tokens = [BYTE_CHARS[b] for b in range(256)] + ["ĠĠ"]
    tokens += [f"tok{i}" for i in range(n_vocab - len(tokens) - len(specials) - len(tags))] + tags + specials
    types = [1] * (len(tokens) - len(specials) - len(tags)) + [4] * len(tags) + [3] * len(specials)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ Ġ"])
    w.add_bos_token_id(len(tokens) - 3)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)


def generate(kind: str, out: Path, dtype: str = "f16", think: bool = False) -> Path:
    if kind in QWEN35_SHAPES:
        return generate_qwen35(kind, out, dtype, think)
    import gguf

    s = SHAPES[kind]
    wdtype = np.float16 if dtype == "f16" else np.float32
    fill = _Filler(scale=s.get("scale", 0.02))
    w = gguf.GGUFWriter(str(out), "qwen2")
    w.add_name(f"{kind}-shaped-random")
    w.add_context_length(32768)
    w.add_embedding_length(s["n_embd"])
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(s["n_ff"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_head_kv"])
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(1 if dtype == "f16" else 0)
    _add_vocab(w, s["n_vocab"], think)
    e, kv = s["n_embd"], s["n_embd"] // s["n_head"] * s["n_head_kv"]
    w.add_tensor("token_embd.weight", fill((s["n_vocab"], e), wdtype))
    w.add_tensor("output_norm.weight", ones(e))
    if not s["tied"]:
        w.add_tensor("output.weight", fill((s["n_vocab"], e), wdtype))
    for i in range(s["n_layer"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(e))
        w.add_tensor(p + "attn_q.weight", fill((e, e), wdtype))
        w.add_tensor(p + "attn_q.bias", fill((e,), np.float32))
        w.add_tensor(p + "attn_k.weight", fill((kv, e), wdtype))
        w.add_tensor(p + "attn_k.bias", fill((kv,), np.float32))
        w.add_tensor(p + "attn_v.weight", fill((kv, e), wdtype))
        w.add_tensor(p + "attn_v.bias", fill((kv,), np.float32))
        w.add_tensor(p + "attn_output.weight", fill((e, e), wdtype))
        w.add_tensor(p + "ffn_norm.weight", ones(e))
        w.add_tensor(p + "ffn_gate.weight", fill((s["n_ff"], e), wdtype))
        w.add_tensor(p + "ffn_up.weight", fill((s["n_ff"], e), wdtype))
        w.add_tensor(p + "ffn_down.weight", fill((e, s["n_ff"]), wdtype))
    _finish(w)
    return out


def generate_qwen35(kind: str, out: Path, dtype: str = "f16", think: bool = False) -> Path:
    """Tensor names and shapes as llama.cpp's `qwen35` loader (src/models/qwen35.cpp) creates them."""
    import gguf

    s = {**QWEN35_SHAPES[kind], **QWEN35_COMMON}
    wdtype = np.float16 if dtype == "f16" else np.float32
    fill = _Filler()
    e, hd, v_heads = s["n_embd"], s["head_dim"], s["v_heads"]
    key_dim, value_dim = s["k_heads"] * s["head_k"], v_heads * s["head_k"]
    conv_dim = 2 * key_dim + value_dim
    w = gguf.GGUFWriter(str(out), "qwen35")
    w.add_name(f"{kind}-shaped-random")
    w.add_context_length(262144)
    w.add_embedding_length(e)
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(s["n_ff"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_head_kv"])
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(s["n_rot"])
    w.add_rope_dimension_sections(s["sections"])
    w.add_rope_freq_base(1e7)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_ssm_conv_kernel(s["d_conv"])
    w.add_ssm_inner_size(value_dim)
    w.add_ssm_state_size(s["head_k"])
    w.add_ssm_time_step_rank(v_heads)
    w.add_ssm_group_count(s["k_heads"])
    w.add_full_attention_interval(s["attn_interval"])
    w.add_file_type(1 if dtype == "f16" else 0)
    _add_vocab(w, s["n_vocab"], think)
    w.add_tensor("token_embd.weight", fill((s["n_vocab"], e), wdtype))
    w.add_tensor("output_norm.weight", ones(e))
    if not s["tied"]:
        w.add_tensor("output.weight", fill((s["n_vocab"], e), wdtype))
    for i in range(s["n_layer"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(e))
        w.add_tensor(p + "post_attention_norm.weight", ones(e))
        if (i + 1) % s["attn_interval"]:  # Gated DeltaNet: conv state + recurrent state per sequence
            w.add_tensor(p + "attn_qkv.weight", fill((conv_dim, e), wdtype))
            w.add_tensor(p + "attn_gate.weight", fill((value_dim, e), wdtype))
            w.add_tensor(p + "ssm_conv1d.weight", fill((conv_dim, s["d_conv"]), np.float32))
            w.add_tensor(p + "ssm_dt.bias", np.zeros((v_heads,), dtype=np.float32))
            w.add_tensor(p + "ssm_a", -ones(v_heads))  # -exp(A_log): a decaying state
            w.add_tensor(p + "ssm_beta.weight", fill((v_heads, e), wdtype))
            w.add_tensor(p + "ssm_alpha.weight", fill((v_heads, e), wdtype))
            w.add_tensor(p + "ssm_norm.weight", ones(s["head_k"]))
            w.add_tensor(p + "ssm_out.weight", fill((e, value_dim), wdtype))
        else:  # gated attention: Q projects query and gate together
            w.add_tensor(p + "attn_q.weight", fill((2 * hd * s["n_head"], e), wdtype))
            w.add_tensor(p + "attn_k.weight", fill((hd * s["n_head_kv"], e), wdtype))
            w.add_tensor(p + "attn_v.weight", fill((hd * s["n_head_kv"], e), wdtype))
            w.add_tensor(p + "attn_output.weight", fill((e, hd * s["n_head"]), wdtype))
            w.add_tensor(p + "attn_q_norm.weight", ones(hd))
            w.add_tensor(p + "attn_k_norm.weight", ones(hd))
        w.add_tensor(p + "ffn_gate.weight", fill((s["n_ff"], e), wdtype))
        w.add_tensor(p + "ffn_up.weight", fill((s["n_ff"], e), wdtype))
        w.add_tensor(p + "ffn_down.weight", fill((e, s["n_ff"]), wdtype))
    _finish(w)
    return out


def ones(n: int) -> np.ndarray:
    return np.ones((n,), dtype=np.float32)


def _finish(w) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=sorted(SHAPES) + sorted(QWEN35_SHAPES))
    ap.add_argument("out", type=Path)
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    ap.add_argument("--think", action="store_true", help="<think> and </think> as tokens: a reasoning model")
    args = ap.parse_args()
    generate(args.kind, args.out, args.dtype, args.think)
    print(f"{args.out}: {args.out.stat().st_size / 1e9:.2f} GB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
