"""Generate tiny GGUF models (llama architecture, byte-level BPE vocab) for fast tests.

All transformer blocks have zero weights, so the hidden state reaching the output layer is the normalised
embedding of the current token alone. The output matrix is built so that greedy decoding follows a fixed
token chain: after the prompt's last token ("\\n" of "<|im_start|>assistant\\n") the model says `reply`
token by token, one byte per token, then <|im_end|> (or loops forever with `loop=True`). That lets a test
assert the exact text, including multi-byte characters split across tokens.

The next token depends on the current token only, so each token of the chain must be unique: a byte that
occurs again (0xBD ends both 你 and 好) is merged with the byte before it into a two-byte token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what byte-level BPE vocabs are written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHARS = _bytes_to_unicode()
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _reply_pieces(data: bytes) -> list[bytes]:
    """Split the reply into tokens: single bytes, except that a byte seen before joins its predecessor."""
    pieces: list[bytes] = []
    for b in data:
        piece = bytes([b])
        if piece in pieces and pieces:
            piece = pieces.pop() + piece
        pieces.append(piece)
    return pieces


# What the tiny model answers by default, and a ChatML prompt the engine tests send it.
TINY_REPLY = "Hi 你好🙂!"
CHAT_PROMPT = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def _unique_pieces(data: bytes, seen: set[bytes]) -> list[bytes]:
    """Like _reply_pieces, across a whole chain: a byte seen before (anywhere in `seen`) joins the piece before
    it, or, where there is none (right after a tag), the byte after it."""
    pieces: list[bytes] = []
    pending = b""
    for b in data:
        piece = pending + bytes([b])
        while piece in seen and pieces:
            seen.discard(pieces[-1])
            piece = pieces.pop() + piece
        if piece in seen:
            pending = piece
            continue
        pending = b""
        seen.add(piece)
        pieces.append(piece)
    if pending:
        raise ValueError(f"cannot make {data!r} a chain of unique tokens")
    return pieces


def thinking_chain(thought: str, answer: str, opened: bool = False) -> list[bytes | str]:
    """The tokens a tiny reasoning model says after its prompt's last "\n": `<think>` (unless the prompt
    opened it), "\n{thought}\n", `</think>`, "\n\n{answer}", as a Qwen3 model writes them. After `</think>`
    comes the "\n\n" token, so a prompt that ends in a closed thought ("</think>\n\n", thinking off) goes
    straight on with the answer."""
    seen = {b"\n"}  # the prompt's last token starts the chain
    body = (b"" if opened else b"\n") + thought.encode("utf-8") + b"\n"
    after = b"\n\n" + answer.encode("utf-8")
    head: list[bytes | str] = [] if opened else [THINK_OPEN]
    return [*head, *_unique_pieces(body, seen), THINK_CLOSE, *_unique_pieces(after, seen)]


@dataclass(frozen=True)
class _ChainVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos: int
    eos: int
    embd: np.ndarray    # (n_vocab, n_embd)
    output: np.ndarray  # (n_vocab, n_embd): the successor's logit ~20 for each token of the chain


def _chain_vocab(reply: str, loop: bool, n_embd: int, thought: str | None = None, think_opened: bool = False,
                 think_token_type: int = 4, answers: dict[str, str] | None = None) -> _ChainVocab:
    side: list[tuple[bytes, list[bytes]]] = []  # (entry byte, its reply's pieces): the `answers` chains
    if thought is not None:
        items: list[bytes | str] = thinking_chain(thought, reply, think_opened)
    else:
        items = list(_reply_pieces(reply.encode("utf-8")))
        if "\n" in reply or answers or len(set(items)) != len(items):
            # pieces unique across every chain, "\n" (the prompt's end) included (JSON, tool calls)
            seen = {b"\n", *(entry.encode("utf-8") for entry in answers or {})}
            items = list(_unique_pieces(reply.encode("utf-8"), seen))
            side = [(entry.encode("utf-8"), _unique_pieces(text.encode("utf-8"), seen))
                    for entry, text in (answers or {}).items()]
    pieces = [p for p in items if isinstance(p, bytes)] + [p for _, chain in side for p in chain]
    tokens = [BYTE_CHARS[b] for b in range(256)]
    merges = ["Ġ Ġ", "i m"]
    tokens += ["ĠĠ", "im"]
    for piece in pieces:
        if len(piece) > 1:
            tokens.append("".join(BYTE_CHARS[b] for b in piece))
            merges.append(" ".join(BYTE_CHARS[b] for b in piece))
    if thought is not None and b"\n\n" not in pieces:  # the thinking-off prompt ends in "</think>\n\n"
        tokens.append(BYTE_CHARS[10] * 2)
        merges.append(f"{BYTE_CHARS[10]} {BYTE_CHARS[10]}")
    tags = [] if thought is None else [THINK_OPEN, THINK_CLOSE]
    tokens += SPECIALS + tags
    types = [1] * (len(tokens) - len(SPECIALS) - len(tags)) + [3] * len(SPECIALS) + [think_token_type] * len(tags)
    tok_id = {t: i for i, t in enumerate(tokens)}
    eos = tok_id["<|im_end|>"]
    n_vocab = len(tokens)

    # The token chain: "\n" -> reply bytes -> <|im_end|> (or back to the first reply byte).
    chain = [tok_id[BYTE_CHARS[ord("\n")]]] + [
        tok_id[p if isinstance(p, str) else "".join(BYTE_CHARS[b] for b in p)] for p in items]
    if len(set(chain)) != len(chain):
        raise ValueError("the reply must not contain a newline, nor the same two bytes twice")
    successor = {a: b for a, b in zip(chain, chain[1:])}
    successor[chain[-1]] = chain[1] if loop else eos
    for entry, pieces_of in side:  # a prompt that ends in `entry` is answered with its own reply
        other = [tok_id[BYTE_CHARS[entry[0]]]] + [tok_id["".join(BYTE_CHARS[b] for b in p)] for p in pieces_of]
        if set(other) & set(successor):
            raise ValueError("an answers chain shares a token with another chain")
        successor.update(zip(other, other[1:]))
        successor[other[-1]] = eos

    rng = np.random.default_rng(1234)
    embd = rng.standard_normal((n_vocab, n_embd)).astype(np.float32)
    unit = embd / np.linalg.norm(embd, axis=1, keepdims=True)
    normed = unit * np.sqrt(n_embd)  # what RMSNorm (weight 1) makes of an embedding
    output = np.zeros((n_vocab, n_embd), dtype=np.float32)
    for a, b in successor.items():
        output[b] += normed[a] / n_embd * 20.0  # logit ~20 for the successor, ~N(0, 20/sqrt(n_embd)) else
    # Tokens off the chain lead somewhere harmless (the first reply byte), so sampling never stalls.
    return _ChainVocab(tokens, types, merges, tok_id["<|endoftext|>"], eos, embd, output)


def _write_vocab(w, v: _ChainVocab, chat_template: str | None) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(v.tokens)
    w.add_token_types(v.types)
    w.add_token_merges(v.merges)
    w.add_bos_token_id(v.bos)
    w.add_eos_token_id(v.eos)
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)


def make_tiny_gguf(
    path: str | Path,
    reply: str = TINY_REPLY,
    loop: bool = False,
    n_embd: int = 256,
    n_layer: int = 2,
    n_ctx_train: int = 2048,
    chat_template: str | None = CHATML_TEMPLATE,
    extra_metadata: dict | None = None,
    split_max_tensors: int = 0,  # > 0: a split GGUF (NAME-00001-of-0000N.gguf, ...); returns the first part
    thought: str | None = None,  # a reasoning model: "<think>\n{thought}\n</think>\n\n{reply}" (see thinking_chain)
    think_opened: bool = False,  # the prompt opens the thought already: the reply starts inside it
    think_token_type: int = 4,  # USER_DEFINED as in Qwen3's GGUFs; 3 (CONTROL) renders as nothing by default
    answers: dict[str, str] | None = None,  # {entry character: reply}: a prompt ending in it gets that reply
) -> Path:
    import gguf

    path = Path(path)
    v = _chain_vocab(reply, loop, n_embd, thought, think_opened, think_token_type, answers)
    n_head = 4
    head_dim = n_embd // n_head
    n_ff = 2 * n_embd
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    w.add_name("tiny-test")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # all f32
    _write_vocab(w, v, chat_template)
    for key, value in (extra_metadata or {}).items():
        w.add_string(key, value)

    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    ones = lambda n: np.ones((n,), dtype=np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", v.embd)
    w.add_tensor("output_norm.weight", ones(n_embd))
    w.add_tensor("output.weight", v.output)
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
    if split_max_tensors:
        return min(path.parent.glob(f"{path.stem}-00001-of-*.gguf"), default=path)
    return path


def make_tiny_qwen35_gguf(path: str | Path, reply: str = TINY_REPLY, loop: bool = False, n_embd: int = 256,
                          n_layer: int = 4, chat_template: str | None = CHATML_TEMPLATE,
                          thought: str | None = None, think_opened: bool = False) -> Path:
    """The same answering model in llama.cpp's hybrid `qwen35` architecture: every 4th layer attention, the
    others Gated DeltaNet with a recurrent state, so its cache cannot be cut back to an earlier token
    (`llama_memory_seq_rm` fails). Block weights are zero here as well, so it answers like make_tiny_gguf."""
    import gguf

    path = Path(path)
    v = _chain_vocab(reply, loop, n_embd, thought, think_opened)
    n_head, head_dim, n_ff = 2, 64, 2 * n_embd
    k_heads, v_heads, d_state, d_conv = 2, 4, 32, 4
    key_dim, value_dim = k_heads * d_state, v_heads * d_state
    w = gguf.GGUFWriter(str(path), "qwen35")
    w.add_name("tiny-qwen35-test")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim // 4)
    w.add_rope_dimension_sections([3, 3, 2, 0])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(value_dim)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(v_heads)
    w.add_ssm_group_count(k_heads)
    w.add_full_attention_interval(4)
    w.add_file_type(0)
    _write_vocab(w, v, chat_template)

    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    ones = lambda n: np.ones((n,), dtype=np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", v.embd)
    w.add_tensor("output_norm.weight", ones(n_embd))
    w.add_tensor("output.weight", v.output)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(n_embd))
        w.add_tensor(p + "post_attention_norm.weight", ones(n_embd))
        if (i + 1) % 4:
            w.add_tensor(p + "attn_qkv.weight", zeros(2 * key_dim + value_dim, n_embd))
            w.add_tensor(p + "attn_gate.weight", zeros(value_dim, n_embd))
            w.add_tensor(p + "ssm_conv1d.weight", zeros(2 * key_dim + value_dim, d_conv))
            w.add_tensor(p + "ssm_dt.bias", zeros(v_heads))
            w.add_tensor(p + "ssm_a", -ones(v_heads))
            w.add_tensor(p + "ssm_beta.weight", zeros(v_heads, n_embd))
            w.add_tensor(p + "ssm_alpha.weight", zeros(v_heads, n_embd))
            w.add_tensor(p + "ssm_norm.weight", ones(d_state))
            w.add_tensor(p + "ssm_out.weight", zeros(n_embd, value_dim))
        else:
            w.add_tensor(p + "attn_q.weight", zeros(2 * head_dim * n_head, n_embd))
            w.add_tensor(p + "attn_k.weight", zeros(head_dim * n_head, n_embd))
            w.add_tensor(p + "attn_v.weight", zeros(head_dim * n_head, n_embd))
            w.add_tensor(p + "attn_output.weight", zeros(n_embd, head_dim * n_head))
            w.add_tensor(p + "attn_q_norm.weight", ones(head_dim))
            w.add_tensor(p + "attn_k_norm.weight", ones(head_dim))
        w.add_tensor(p + "ffn_gate.weight", zeros(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", zeros(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", zeros(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
