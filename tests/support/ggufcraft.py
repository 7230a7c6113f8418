"""Craft GGUF files byte by byte, including the malformed ones no GGUF writer would produce.

`GGUFCraft` holds metadata entries and tensor infos as plain values and writes them with every knob a
hostile file could turn: wrong magic or version, counts that lie, raw bytes in place of a value,
explicit tensor offsets and shapes. `build()` also returns where each section ends, so tests can cut the
file at every boundary.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
_TYPE_SIZE = {GGML_F32: (1, 4), GGML_F16: (1, 2), GGML_Q8_0: (32, 34)}


def string(s: str | bytes) -> bytes:
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def value(vtype: int, v: Any) -> bytes:
    """The encoding of a value of type `vtype` (without the type field). Arrays: v = (element type, items)."""
    if vtype in _FMT:
        return struct.pack("<" + _FMT[vtype], v)
    if vtype == STR:
        return string(v)
    if vtype == ARR:
        etype, items = v
        return struct.pack("<IQ", etype, len(items)) + b"".join(value(etype, i) for i in items)
    raise ValueError(vtype)


@dataclass
class Tensor:
    name: str | bytes
    shape: tuple[int, ...]
    ggml_type: int = GGML_F32
    offset: int | None = None  # None: packed after the previous tensor

    @property
    def nbytes(self) -> int:
        block, size = _TYPE_SIZE[self.ggml_type]
        n = 1
        for d in self.shape:
            n *= d
        return n // block * size


@dataclass
class GGUFCraft:
    magic: bytes = b"GGUF"
    version: int = 3
    alignment: int = 32
    kv: list[tuple[bytes, bytes]] = field(default_factory=list)  # (encoded key, type + encoded value)
    tensors: list[Tensor] = field(default_factory=list)

    def add(self, key: str | bytes, vtype: int, v: Any) -> GGUFCraft:
        self.kv.append((string(key), struct.pack("<I", vtype) + value(vtype, v)))
        return self

    def add_raw(self, key: str | bytes, raw: bytes) -> GGUFCraft:
        """A key followed by arbitrary bytes where its type and value belong."""
        self.kv.append((string(key), raw))
        return self

    def tensor(self, name: str | bytes, shape: tuple[int, ...], ggml_type: int = GGML_F32,
               offset: int | None = None) -> GGUFCraft:
        self.tensors.append(Tensor(name, shape, ggml_type, offset))
        return self

    def build(self, n_tensors: int | None = None, n_kv: int | None = None, data: bool = True,
              tensor_info_override: dict[int, bytes] | None = None) -> tuple[bytes, dict[str, Any]]:
        """The file's bytes and its layout: {'header': end, 'kv': [ends], 'tensors': [ends], 'data': start,
        'end': size}. `tensor_info_override` replaces the encoded info of tensor i by raw bytes."""
        out = bytearray(self.magic + struct.pack("<IQQ", self.version,
                                                 len(self.tensors) if n_tensors is None else n_tensors,
                                                 len(self.kv) if n_kv is None else n_kv))
        layout: dict[str, Any] = {"header": len(out), "kv": [], "tensors": []}
        for key, raw in self.kv:
            out += key + raw
            layout["kv"].append(len(out))
        offsets, cursor = [], 0
        for t in self.tensors:
            offset = cursor if t.offset is None else t.offset
            offsets.append(offset)
            cursor = max(cursor, offset + -(-t.nbytes // self.alignment) * self.alignment)
        for i, (t, offset) in enumerate(zip(self.tensors, offsets)):
            if tensor_info_override and i in tensor_info_override:
                out += tensor_info_override[i]
            else:
                out += string(t.name) + struct.pack("<I", len(t.shape))
                out += b"".join(struct.pack("<Q", d) for d in t.shape)
                out += struct.pack("<IQ", t.ggml_type, offset)
            layout["tensors"].append(len(out))
        data_start = -(-len(out) // self.alignment) * self.alignment
        layout["data"] = data_start
        if data and self.tensors:
            out += b"\0" * (data_start - len(out))
            end = max(o + t.nbytes for o, t in zip(offsets, self.tensors))
            out += bytes((i * 7) & 0xFF for i in range(end))
        layout["end"] = len(out)
        return bytes(out), layout


def valid_craft() -> GGUFCraft:
    """A small, valid model-like GGUF: every value type, a nested array, three tensors of two types."""
    c = GGUFCraft()
    c.add("general.architecture", STR, "llama").add("general.name", STR, "craft ✓")
    c.add("general.alignment", U32, 32).add("llama.context_length", U32, 4096).add("llama.block_count", U32, 1)
    c.add("general.file_type", U32, 7)
    for vtype, v in ((U8, 200), (I8, -5), (U16, 60000), (I16, -300), (I32, -70000), (F32, 1.5), (BOOL, True),
                     (U64, 1 << 40), (I64, -(1 << 40)), (F64, 2.25)):
        c.add(f"test.{vtype}", vtype, v)
    c.add("tokenizer.ggml.tokens", ARR, (STR, ["<s>", "</s>", "a", "b", "ab"]))
    c.add("tokenizer.ggml.token_type", ARR, (I32, [3, 3, 1, 1, 1]))
    c.add("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, -1.0, -2.0, -3.0]))
    c.add("tokenizer.ggml.bos_token_id", U32, 0).add("tokenizer.ggml.eos_token_id", U32, 1)
    c.add("tokenizer.chat_template", STR, "{% for m in messages %}{{ m.content }}{% endfor %}")
    c.add("test.nested", ARR, (ARR, [(U8, [1, 2]), (U8, [3])]))
    c.tensor("token_embd.weight", (32, 5), GGML_Q8_0).tensor("output_norm.weight", (32,)).tensor("output.weight", (32, 5), GGML_F16)
    return c
