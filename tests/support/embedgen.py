"""Generate a tiny embedding model (llama architecture, mean pooling) whose sentence vectors mean something.

As in ggufgen, every transformer block has zero weights, so each position's final hidden state is the
normalised embedding of its own token, and mean pooling averages them. The vocabulary holds whole words
(BPE merges build them from bytes), and words with one meaning share one direction: "cat" and "kitten",
"sat" and "sitting", "mat" and "rug". So "The cat sat on the mat" and "A kitten was sitting on the rug"
come out close, and "Stock prices fell sharply today" far from both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.ggufgen import BYTE_CHARS, SPECIALS

# Words of one concept share a direction; every other word gets its own.
CONCEPTS = [("cat", "kitten", "cats"), ("sat", "sitting", "seated"), ("mat", "rug", "carpet"),
            ("the", "a", "A", "The"), ("on",), ("was",), ("stock", "Stock", "shares"), ("prices",), ("fell",),
            ("sharply",), ("today",), ("dog", "puppy"), ("ran", "running"), ("park",)]
PARAPHRASES = ("The cat sat on the mat", "A kitten was sitting on the rug")
UNRELATED = "Stock prices fell sharply today"


def make_tiny_embedding_gguf(path: str | Path, n_embd: int = 64, pooling: int | None = 1) -> Path:
    """pooling: llama.cpp's pooling type in the metadata (1 mean, 2 cls, 3 last), None to write none."""
    import gguf

    path = Path(path)
    tokens = [BYTE_CHARS[b] for b in range(256)]
    merges: list[str] = []
    words = [w for group in CONCEPTS for w in group]
    for word in words:  # the space before a word stays a token of its own (the same in every sentence)
        chars = [BYTE_CHARS[b] for b in word.encode("utf-8")]
        built = chars[0]
        for ch in chars[1:]:
            merged = built + ch
            if merged not in tokens:
                merges.append(f"{built} {ch}")
                tokens.append(merged)
            built = merged
    tokens += SPECIALS
    tok_id = {t: i for i, t in enumerate(tokens)}
    n_vocab = len(tokens)

    rng = np.random.default_rng(4321)
    embd = rng.standard_normal((n_vocab, n_embd)).astype(np.float32)
    for group in CONCEPTS:
        direction = rng.standard_normal(n_embd).astype(np.float32)
        for word in group:
            embd[tok_id["".join(BYTE_CHARS[b] for b in word.encode("utf-8"))]] = direction

    n_head, n_layer = 4, 1
    n_ff = 2 * n_embd
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-embedding-test")
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    if pooling is not None:
        w.add_pooling_type(gguf.PoolingType(pooling))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * (n_vocab - len(SPECIALS)) + [3] * len(SPECIALS))
    w.add_token_merges(merges)
    w.add_bos_token_id(tok_id["<|endoftext|>"])
    w.add_eos_token_id(tok_id["<|im_end|>"])
    w.add_add_bos_token(False)

    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    ones = lambda n: np.ones((n,), dtype=np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", ones(n_embd))
    w.add_tensor("output.weight", zeros(n_vocab, n_embd))
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(n_embd))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", zeros(n_embd, n_embd))
        w.add_tensor(p + "ffn_norm.weight", ones(n_embd))
        w.add_tensor(p + "ffn_gate.weight", zeros(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", zeros(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", zeros(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
