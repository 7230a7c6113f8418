"""Read and bound-check a GGUF file's header, metadata and tensor table without loading tensor data.

Every file is checked here before llama.cpp sees it: llama.cpp's own parser has had heap overflows on
crafted files (CVE-2024-25664..25668, CVE-2024-21802, -21825, -21836, -23496, -23605). Each length, count,
type and offset is checked against sane maxima and against what the file can actually hold before it is
used, and nothing is allocated from a size the file claims until the bytes are known to be there.

Files are read with plain reads, not mmap: a file truncated by another process while mapped would kill us
with SIGBUS. Large arrays (the vocabulary) are walked and bound-checked element by element but kept only
as a summary (`GGUFArray`), so reading a 151k-token model takes milliseconds.
"""

from __future__ import annotations

import os
import stat
import struct
from array import array
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

from localchat.errors import GGUFError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Sane maxima: far above any real model, far below what could exhaust memory or time.
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
MAX_KEY_BYTES = 65535  # the GGUF spec's limit on a key
MAX_STRING_BYTES = 16 << 20  # one metadata string (chat templates are ~10 KB)
MAX_ARRAY_LENGTH = 1 << 24  # vocabularies are ~50k..260k entries
MAX_ARRAY_DEPTH = 3  # an array of arrays of arrays at most
MAX_TENSOR_NAME_BYTES = 63  # ggml's GGML_MAX_NAME (64) including the NUL
MAX_DIMS = 4  # ggml's GGML_MAX_DIMS
MAX_ALIGNMENT = 1 << 20
MAX_METADATA_BYTES = 128 << 20  # header + metadata + tensor table (a 151k-token vocabulary takes 6 MB)
MAX_MODEL_BYTES = 1 << 45  # 32 TiB: a tensor said to end beyond this is corrupt, not cut off
SMALL_ARRAY = 1024  # arrays up to this length are kept as Python lists...
MAX_KEPT_VALUES = 1 << 18  # ... until this many values are kept in all (nested small arrays multiply)
INT64_MAX = (1 << 63) - 1

_FIRST_READ = 8 << 20  # enough for the metadata of nearly every model in one read
_CHECKPOINT_STRIDE = 256  # in large string arrays, remember every 256th element's offset


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALARS: dict[int, tuple[str, int]] = {
    ValueType.UINT8: ("B", 1), ValueType.INT8: ("b", 1), ValueType.UINT16: ("H", 2),
    ValueType.INT16: ("h", 2), ValueType.UINT32: ("I", 4), ValueType.INT32: ("i", 4),
    ValueType.FLOAT32: ("f", 4), ValueType.BOOL: ("?", 1), ValueType.UINT64: ("Q", 8),
    ValueType.INT64: ("q", 8), ValueType.FLOAT64: ("d", 8),
}
_INTEGERS = {ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16, ValueType.UINT32,
             ValueType.INT32, ValueType.UINT64, ValueType.INT64}

# ggml tensor types: id -> (name, elements per block, bytes per block), as in ggml.c's type_traits.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, a 1-byte value
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8  # name length, n_dims (0), type, offset

_REDOWNLOAD = "download it again"
_DAMAGED = "the file is damaged or was not made by a GGUF writer; download it again from a trusted source"


@dataclass(frozen=True)
class GGUFArray:
    """A large metadata array, checked element by element but kept only as its element type and length."""

    element_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0]


@dataclass
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    alignment: int
    file_size: int
    special_tokens: dict[int, str] = field(default_factory=dict, repr=False)  # token id -> text

    def _get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        value = self.metadata.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    @property
    def architecture(self) -> str:
        return self._get("general.architecture", str) or ""

    @property
    def name(self) -> str | None:
        return self._get("general.name", str)

    @property
    def context_length(self) -> int | None:
        return self._get(f"{self.architecture}.context_length", int)

    @property
    def block_count(self) -> int | None:
        return self._get(f"{self.architecture}.block_count", int)

    @property
    def chat_template(self) -> str | None:
        return self._get("tokenizer.chat_template", str)

    @property
    def split_count(self) -> int:
        return self._get("split.count", int) or 1

    @property
    def split_index(self) -> int:
        return self._get("split.no", int) or 0

    @property
    def file_type(self) -> int | None:
        return self._get("general.file_type", int)

    def _token(self, key: str) -> str | None:
        token_id = self._get(key, int)
        return None if token_id is None else self.special_tokens.get(token_id)

    @property
    def bos_token(self) -> str | None:
        return self._token("tokenizer.ggml.bos_token_id")

    @property
    def eos_token(self) -> str | None:
        return self._token("tokenizer.ggml.eos_token_id")


class _NeedMore(Exception):
    """The parse ran past the bytes read so far, but the file has more: read further and start again."""

    def __init__(self, needed: int) -> None:
        self.needed = needed


class _Parser:
    def __init__(self, buf: bytes, file_size: int, path: Path) -> None:
        self.buf = buf
        self.avail = len(buf)
        self.size = file_size
        self.path = path
        self.label = path.name or str(path)
        self.pos = 0
        self.types: dict[str, tuple[int, int | None]] = {}  # key -> (value type, array element type)
        self.checkpoints: dict[str, tuple[int, array]] = {}  # large string arrays: (length, offsets)
        self.keep_left = MAX_KEPT_VALUES

    # -- low-level reads, each bound-checked first
    def fail(self, problem: str, hint: str = _DAMAGED) -> NoReturn:
        raise GGUFError(f"{self.label} {problem}", hint)

    def past_end(self, end: int, what: str, claimed: int | None = None) -> NoReturn:
        """`what` would end at byte `end`, past the bytes we have: read more, or say why the file is bad."""
        if end <= self.size and self.avail < self.size:
            raise _NeedMore(end)
        if claimed is not None and claimed > self.size:
            self.fail(f"is corrupt: {what} claims {claimed:,} bytes, more than the whole file ({self.size:,} bytes)")
        self.fail(f"is truncated: {what} ends at byte {end:,} but the file has {self.size:,} bytes", _REDOWNLOAD)

    def need(self, n: int, what: str, from_file: bool = False) -> int:
        """Check the next n bytes are there; `from_file`: n is a length the file claims, not a field width."""
        end = self.pos + n
        if end > self.avail:
            self.past_end(end, what, claimed=n if from_file else None)
        return end

    def u32(self, what: str) -> int:
        self.need(4, what)
        (value,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return value

    def u64(self, what: str) -> int:
        self.need(8, what)
        (value,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return value

    def string(self, what: str, limit: int, strict: bool) -> str:
        n = self.u64(f"the length of {what}")
        if n > limit:
            if n > self.size:
                self.fail(f"is corrupt: {what} claims {n:,} bytes, more than the whole file ({self.size:,} bytes)")
            self.fail(f"is corrupt: {what} is {n:,} bytes long, more than the {limit:,} allowed")
        end = self.need(n, what, from_file=True)
        raw = self.buf[self.pos:end]
        self.pos = end
        if not strict:
            return raw.decode("utf-8", errors="replace")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"is corrupt: {what} is not valid UTF-8 ({raw[:40]!r})")

    # -- metadata values
    def value(self, vtype: int, key: str, depth: int) -> Any:
        scalar = _SCALARS.get(vtype)
        if scalar is not None:
            code, width = scalar
            self.need(width, f"the value of {key!r}")
            (value,) = struct.unpack_from("<" + code, self.buf, self.pos)
            self.pos += width
            return value
        if vtype == ValueType.STRING:
            return self.string(f"the value of {key!r}", MAX_STRING_BYTES, strict=False)
        if vtype == ValueType.ARRAY:
            return self.array(key, depth)
        self.fail(f"is corrupt: metadata {key!r} has unknown value type {vtype}")

    def array(self, key: str, depth: int, keep_ok: bool = True) -> Any:
        where = f"the array {key!r}"
        etype = self.u32(f"the element type of {where}")
        if etype not in ValueType._value2member_map_:
            self.fail(f"is corrupt: {where} has unknown element type {etype}")
        if etype == ValueType.ARRAY and depth + 1 >= MAX_ARRAY_DEPTH:
            self.fail(f"is corrupt: {where} nests arrays more than {MAX_ARRAY_DEPTH} deep")
        n = self.u64(f"the length of {where}")
        if n > MAX_ARRAY_LENGTH:
            self.fail(f"is corrupt: {where} claims {n:,} elements, more than the {MAX_ARRAY_LENGTH:,} allowed")
        if depth == 0:
            self.types[key] = (ValueType.ARRAY, etype)
        keep = keep_ok and n <= SMALL_ARRAY and n <= self.keep_left
        if keep:
            self.keep_left -= n
        scalar = _SCALARS.get(etype)
        if scalar is not None:
            code, width = scalar
            end = self.need(n * width, where, from_file=True)
            values: Any = list(struct.unpack_from(f"<{n}{code}", self.buf, self.pos)) if keep else GGUFArray(etype, n)
            self.pos = end
            return values
        if etype == ValueType.STRING:
            if keep:
                return [self.string(f"element {i} of {where}", MAX_STRING_BYTES, strict=False) for i in range(n)]
            self.skip_strings(n, key if depth == 0 else None, where)
            return GGUFArray(etype, n)
        if self.pos + n * 12 > self.avail:  # each nested array needs at least its type and length
            self.past_end(self.pos + n * 12, f"{where} of {n:,} arrays", claimed=n * 12)
        if keep:
            return [self.array(key, depth + 1) for _ in range(n)]
        for _ in range(n):
            self.array(key, depth + 1, keep_ok=False)
        return GGUFArray(etype, n)

    def skip_strings(self, n: int, key: str | None, where: str) -> None:
        """Walk a large string array checking every element's bounds; the hot loop of the whole reader."""
        buf, pos, avail, unpack = self.buf, self.pos, self.avail, _U64.unpack_from
        offsets = array("Q")
        i = 0
        try:
            for i in range(0, n, _CHECKPOINT_STRIDE):
                offsets.append(pos)
                for _ in range(min(_CHECKPOINT_STRIDE, n - i)):
                    pos += 8 + unpack(buf, pos)[0]
            end = pos
        except (struct.error, OverflowError):  # a length field lies past the bytes we have (or past 2**63)
            end = pos + 8
        if end > avail:
            self.past_end(end, f"{where} (around element {i:,})", claimed=end - self.pos)
        self.pos = pos
        if key is not None:
            self.checkpoints[key] = (n, offsets)

    def string_at(self, key: str, index: int) -> str | None:
        """Element `index` of a large string array walked by skip_strings (for special-token lookups)."""
        n, offsets = self.checkpoints[key]
        if not 0 <= index < n:
            return None
        pos = offsets[index // _CHECKPOINT_STRIDE]
        for _ in range(index % _CHECKPOINT_STRIDE):
            pos += 8 + _U64.unpack_from(self.buf, pos)[0]
        (length,) = _U64.unpack_from(self.buf, pos)
        return self.buf[pos + 8:pos + 8 + length].decode("utf-8", errors="replace")

    # -- the file
    def parse(self) -> GGUFInfo:
        version, n_tensors, n_kv = self.header()
        metadata = self.metadata(n_kv)
        alignment = self.check_known_keys(metadata)
        tensors = self.tensor_infos(n_tensors)
        data_offset = -(-self.pos // alignment) * alignment
        self.check_tensor_data(tensors, data_offset, alignment)
        info = GGUFInfo(self.path, version, metadata, tensors, data_offset, alignment, self.size)
        info.special_tokens = self.special_tokens(metadata)
        return info

    def header(self) -> tuple[int, int, int]:
        if self.size == 0:
            self.fail("is empty", _REDOWNLOAD)
        if self.buf[:4] != GGUF_MAGIC:
            self.fail(f"is not a GGUF file (it starts with {self.buf[:4]!r}, not {GGUF_MAGIC!r})",
                      "choose a .gguf model file")
        self.need(_HEADER.size, "the GGUF header")
        _, version, n_tensors, n_kv = _HEADER.unpack_from(self.buf, 0)
        self.pos = _HEADER.size
        if version == 1:
            self.fail("uses GGUF version 1 (2023), which llama.cpp no longer reads",
                      "download a current GGUF of this model or convert it again with a current llama.cpp")
        if version in (0x02000000, 0x03000000):
            self.fail("is a big-endian GGUF", "use the little-endian GGUF of this model")
        if version not in SUPPORTED_VERSIONS:
            self.fail(f"has unknown GGUF version {version}",
                      "it needs a newer llama.cpp than localchat knows, or it is damaged")
        if n_tensors > MAX_TENSORS:
            self.fail(f"is corrupt: it claims {n_tensors:,} tensors, more than the {MAX_TENSORS:,} allowed")
        if n_kv > MAX_KV:
            self.fail(f"is corrupt: it claims {n_kv:,} metadata entries, more than the {MAX_KV:,} allowed")
        least = self.pos + n_tensors * _MIN_TENSOR_BYTES + n_kv * _MIN_KV_BYTES
        if least > self.size:
            self.fail(f"is truncated: its {n_tensors:,} tensors and {n_kv:,} metadata entries need at least "
                      f"{least:,} bytes but the file has {self.size:,} bytes", _REDOWNLOAD)
        return version, n_tensors, n_kv

    def metadata(self, n_kv: int) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = self.string(f"metadata key #{i}", MAX_KEY_BYTES, strict=True)
            if not key:
                self.fail(f"is corrupt: metadata key #{i} is empty")
            if key in metadata:
                self.fail(f"is corrupt: metadata key {key!r} appears twice")
            vtype = self.u32(f"the value type of {key!r}")
            self.types.setdefault(key, (vtype, None))
            metadata[key] = self.value(vtype, key, 0)
        return metadata

    def check_known_keys(self, md: dict[str, Any]) -> int:
        """Types of the keys llama.cpp trusts blindly (it asserts, or indexes arrays by token id); alignment."""
        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in md:
            alignment = md["general.alignment"]
            if self.types["general.alignment"][0] != ValueType.UINT32:
                self.fail("is corrupt: general.alignment must be a uint32")
            if not 0 < alignment <= MAX_ALIGNMENT or alignment & (alignment - 1):
                self.fail(f"is corrupt: general.alignment is {alignment}, not a power of two up to {MAX_ALIGNMENT:,}")
        for key in ("general.architecture", "tokenizer.chat_template", "tokenizer.ggml.model"):
            if key in md and self.types[key][0] != ValueType.STRING:
                self.fail(f"is corrupt: {key} must be a string")
        for key in ("split.no", "split.count", "split.tensors.count"):
            if key in md and self.types[key][0] not in _INTEGERS:
                self.fail(f"is corrupt: {key} must be an integer")
        count, index = md.get("split.count", 1), md.get("split.no", 0)
        if not 1 <= count <= 65535 or not 0 <= index < count:  # llama.cpp keeps both in a uint16
            self.fail(f"is corrupt: its split.no is {index} but its split.count is {count}")
        if index == 0 and not md.get("general.architecture"):
            self.fail("has no general.architecture, so it is not a model llama.cpp can load",
                      "choose a GGUF model file (or the first part, -00001-of-N, of a split model)")
        tokens = md.get("tokenizer.ggml.tokens")
        if tokens is not None and self.types["tokenizer.ggml.tokens"] != (ValueType.ARRAY, ValueType.STRING):
            self.fail("is corrupt: tokenizer.ggml.tokens must be an array of strings")
        # llama.cpp reads these per token, indexed up to the vocabulary size: lengths and types must match.
        for key, etype in (("tokenizer.ggml.scores", ValueType.FLOAT32), ("tokenizer.ggml.token_type", ValueType.INT32),
                           ("tokenizer.ggml.merges", ValueType.STRING)):
            if key not in md:
                continue
            if self.types[key] != (ValueType.ARRAY, etype):
                self.fail(f"is corrupt: {key} must be an array of {etype.name.lower()}")
            if key != "tokenizer.ggml.merges" and (tokens is None or len(md[key]) != len(tokens)):
                have = 0 if tokens is None else len(tokens)
                self.fail(f"is corrupt: {key} has {len(md[key]):,} entries but the vocabulary has {have:,} tokens")
        return alignment

    def tensor_infos(self, n_tensors: int) -> list[TensorInfo]:
        tensors: list[TensorInfo] = []
        names: set[str] = set()
        for i in range(n_tensors):
            name = self.string(f"the name of tensor #{i}", MAX_TENSOR_NAME_BYTES, strict=True)
            what = f"tensor {name!r}"
            if not name:
                self.fail(f"is corrupt: tensor #{i} has an empty name")
            if name in names:
                self.fail(f"is corrupt: two tensors are named {name!r}")
            names.add(name)
            n_dims = self.u32(f"the dimension count of {what}")
            if n_dims > MAX_DIMS:
                self.fail(f"is corrupt: {what} has {n_dims:,} dimensions; ggml allows at most {MAX_DIMS}")
            end = self.need(8 * n_dims, f"the shape of {what}")
            shape = struct.unpack_from(f"<{n_dims}Q", self.buf, self.pos)
            self.pos = end
            elements = 1
            for dim in shape:
                if dim == 0 or dim > INT64_MAX:
                    self.fail(f"is corrupt: {what} has an impossible shape {list(shape)}")
                elements *= dim
            if elements > INT64_MAX:
                self.fail(f"is corrupt: {what} has shape {list(shape)}, whose element count overflows 64 bits")
            ggml_type = self.u32(f"the type of {what}")
            if ggml_type not in GGML_TYPES:
                self.fail(f"has {what} of unknown ggml type {ggml_type}",
                          "the file is damaged, or it needs a newer llama.cpp than the one installed")
            type_name, block, type_size = GGML_TYPES[ggml_type]
            if (shape[0] if shape else 1) % block:
                self.fail(f"is corrupt: {what} has a row of {shape[0] if shape else 1} elements, "
                          f"not a multiple of {type_name}'s block of {block}")
            offset = self.u64(f"the data offset of {what}")
            tensors.append(TensorInfo(name, tuple(shape), ggml_type, offset, elements // block * type_size))
        return tensors

    def check_tensor_data(self, tensors: list[TensorInfo], data_offset: int, alignment: int) -> None:
        for t in tensors:
            if t.offset % alignment:
                self.fail(f"is corrupt: tensor {t.name!r} starts at data offset {t.offset:,}, "
                          f"not a multiple of the alignment ({alignment})")
        # Writers pack tensors one after the other, so no tensor ends past the padded sum of all sizes; one
        # that does has a corrupt offset rather than a cut-off file.
        packed = sum(-(-t.nbytes // alignment) * alignment for t in tensors)
        previous: TensorInfo | None = None
        for t in sorted(tensors, key=lambda t: t.offset):
            end = data_offset + t.offset + t.nbytes
            if end > self.size:
                if t.offset + t.nbytes > packed or end > MAX_MODEL_BYTES:
                    self.fail(f"is corrupt: tensor {t.name!r} claims bytes {data_offset + t.offset:,} to {end:,}, "
                              f"past the end of the file ({self.size:,} bytes)")
                self.fail(f"is truncated: tensor {t.name!r} ends at byte {end:,} but the file has "
                          f"{self.size:,} bytes", _REDOWNLOAD)
            if previous is not None and previous.offset + previous.nbytes > t.offset:
                self.fail(f"is corrupt: the data of tensors {previous.name!r} and {t.name!r} overlap")
            previous = t

    def special_tokens(self, md: dict[str, Any]) -> dict[int, str]:
        tokens = md.get("tokenizer.ggml.tokens")
        found: dict[int, str] = {}
        for key in ("bos", "eos", "unknown", "padding"):
            token_id = md.get(f"tokenizer.ggml.{key}_token_id")
            if not isinstance(token_id, int) or isinstance(token_id, bool) or tokens is None:
                continue
            if isinstance(tokens, list):
                text = tokens[token_id] if 0 <= token_id < len(tokens) else None
            else:
                text = self.string_at("tokenizer.ggml.tokens", token_id)
            if text is not None:
                found[token_id] = text
        return found


def _parse(buf: bytes, size: int, path: Path) -> GGUFInfo:
    try:
        return _Parser(buf, size, path).parse()
    except (struct.error, ValueError, OverflowError, IndexError, KeyError, MemoryError, RecursionError) as e:
        # Every read is bound-checked first; this only turns a bug of ours into a refusal, never a crash.
        raise GGUFError(f"{path.name} could not be checked (internal error: {type(e).__name__}: {e})",
                        _DAMAGED) from e


def parse_gguf_bytes(data: bytes, path: str | Path = "<memory>", file_size: int | None = None) -> GGUFInfo:
    """Check a GGUF held in memory. `data` may be just the start of a file of `file_size` bytes (its
    header, metadata and tensor table): tensor data is never read, only checked to lie inside the file."""
    size = len(data) if file_size is None else file_size
    try:
        return _parse(data, max(size, len(data)), Path(path))
    except _NeedMore as more:
        raise GGUFError(f"{Path(path).name} is truncated: its header needs byte {more.needed:,} "
                        f"but only {len(data):,} bytes were given", _REDOWNLOAD) from None


def read_gguf(path: str | Path) -> GGUFInfo:
    """Read and check a GGUF file's header, metadata and tensor table. Raises GGUFError naming the problem."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not block; the fstat below refuses anything but a regular file.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise GGUFError(f"cannot open {path}: {e.strerror or e}", "check the path and its permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise GGUFError(f"{path} is not a regular file", "choose a .gguf model file")
        size, f = st.st_size, os.fdopen(fd, "rb")
    except (OSError, GGUFError) as e:
        os.close(fd)
        if isinstance(e, GGUFError):
            raise
        raise GGUFError(f"cannot read {path}: {e.strerror or e}", "check the path and its permissions") from None
    with f:
        try:
            buf = f.read(min(size, _FIRST_READ))
            while True:
                try:
                    return _parse(buf, size, path)
                except _NeedMore as more:
                    if more.needed > MAX_METADATA_BYTES:
                        raise GGUFError(f"{path.name} is corrupt: its metadata runs past {MAX_METADATA_BYTES:,} bytes",
                                        _DAMAGED) from None
                    want = min(size, max(2 * len(buf), more.needed + (1 << 20)))
                    extra = f.read(want - len(buf))
                    if not extra:  # the file shrank while we read it
                        size = len(buf)
                    buf += extra
        except OSError as e:
            raise GGUFError(f"cannot read {path}: {e.strerror or e}", "check the file and the disk") from None


def check_split(paths: list[Path]) -> list[GGUFInfo]:
    """Check every part of a (possibly split) model: each file valid, one consistent split.count, parts
    0..n-1 each present once, tensor names unique across parts. Returns the parts in order."""
    if not paths:
        raise GGUFError("no GGUF files given", "name the model file, or every part of a split model")
    infos = [read_gguf(p) for p in paths]
    counts = {info.split_count for info in infos}
    if len(counts) > 1:
        detail = ", ".join(f"{i.path.name} says {i.split_count}" for i in infos)
        raise GGUFError(f"the parts of this split model disagree on how many parts there are ({detail})",
                        "download all parts of the same model again")
    count = counts.pop()
    by_index: dict[int, GGUFInfo] = {}
    for info in infos:
        other = by_index.setdefault(info.split_index, info)
        if other is not info:
            raise GGUFError(f"{other.path.name} and {info.path.name} are both part {info.split_index + 1} of {count}",
                            "give each part once")
    missing = [i + 1 for i in range(count) if i not in by_index]
    if missing or len(infos) != count:
        raise GGUFError(f"this model has {count} parts but {len(infos)} were given"
                        + (f"; part(s) {', '.join(map(str, missing))} missing" if missing else ""),
                        "download every -0000K-of-N file of the model into the same folder")
    ordered = [by_index[i] for i in range(count)]
    seen: dict[str, Path] = {}
    for info in ordered:
        for t in info.tensors:
            if seen.setdefault(t.name, info.path) is not info.path:
                raise GGUFError(f"tensor {t.name!r} is in both {seen[t.name].name} and {info.path.name}", _DAMAGED)
    declared = ordered[0].metadata.get("split.tensors.count")
    if count > 1 and isinstance(declared, int) and declared != len(seen):
        raise GGUFError(f"{ordered[0].path.name} says the model has {declared:,} tensors but its "
                        f"{count} parts hold {len(seen):,}", _REDOWNLOAD)
    return ordered
