"""What `localchat add` / `import` write into a catalog entry, read from the GGUF header: architecture,
training context length, chat template, name, file type. A small bounded reader of the key/value section
only (no tensors); the full structural check is the installer's (localchat.gguf) before this runs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from localchat.errors import GGUFError

_MAX_KV = 1 << 20
_MAX_STRING = 64 << 20  # a chat template or a long name, never more
_MAX_ARRAY = 1 << 26
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# llama.cpp's general.file_type values (LLAMA_FTYPE_MOSTLY_*), for entries whose file name does not say.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}


@dataclass
class ModelFacts:
    architecture: str | None = None
    context_length: int | None = None
    chat_template: str | None = None
    name: str | None = None
    file_type: int | None = None

    @property
    def quant(self) -> str | None:
        return FILE_TYPES.get(self.file_type) if self.file_type is not None else None


def read_facts(path: Path) -> ModelFacts:
    wanted = {"general.architecture", "general.name", "general.file_type", "tokenizer.chat_template"}
    values: dict[str, object] = {}
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise GGUFError(f"{path} is not a GGUF file")
            version = _read(f, "<I")
            if version not in (2, 3):
                raise GGUFError(f"{path}: unsupported GGUF version {version}")
            _read(f, "<Q")  # tensor count
            n_kv = _read(f, "<Q")
            if n_kv > _MAX_KV:
                raise GGUFError(f"{path}: implausible metadata count {n_kv}")
            for _ in range(n_kv):
                key = _string(f)
                vtype = _read(f, "<I")
                keep = key in wanted or key.endswith(".context_length")
                value = _value(f, vtype, keep)
                if keep:
                    values[key] = value
    except (struct.error, UnicodeDecodeError, EOFError) as exc:
        raise GGUFError(f"{path}: truncated or malformed GGUF metadata ({exc})",
                        hint="the file is damaged; download or copy it again") from None
    arch = values.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    ctx = values.get(f"{arch}.context_length") if arch else None
    template = values.get("tokenizer.chat_template")
    name = values.get("general.name")
    ftype = values.get("general.file_type")
    return ModelFacts(arch, ctx if isinstance(ctx, int) and ctx > 0 else None,
                      template if isinstance(template, str) and template.strip() else None,
                      name if isinstance(name, str) and name.strip() else None,
                      ftype if isinstance(ftype, int) else None)


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError("unexpected end of file")
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO, keep: bool = True) -> str:
    n = _read(f, "<Q")
    if n > _MAX_STRING:
        raise GGUFError(f"implausible string length {n} in GGUF metadata")
    if not keep:
        f.seek(n, 1)
        return ""
    data = f.read(n)
    if len(data) != n:
        raise EOFError("unexpected end of file")
    return data.decode("utf-8")


def _value(f: BinaryIO, vtype: int, keep: bool):
    if vtype in _SCALAR:
        return _read(f, _SCALAR[vtype])
    if vtype == _STRING:
        return _string(f, keep)
    if vtype == _ARRAY:
        item_type, count = _read(f, "<I"), _read(f, "<Q")
        if count > _MAX_ARRAY:
            raise GGUFError(f"implausible array length {count} in GGUF metadata")
        if item_type in _SCALAR:
            f.seek(struct.calcsize(_SCALAR[item_type]) * count, 1)
        elif item_type == _STRING:
            for _ in range(count):
                _string(f, keep=False)
        else:
            raise GGUFError(f"unsupported GGUF array item type {item_type}")
        return None
    raise GGUFError(f"unknown GGUF value type {vtype}")
