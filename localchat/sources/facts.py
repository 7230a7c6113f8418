"""What `localchat add` / `import` write into a catalog entry, read from the GGUF header: architecture,
training context length, chat template, name, file type (through our bounded reader, localchat.gguf).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from localchat.gguf import read_gguf

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
    """Raises GGUFError (naming the problem) for a file that is not a well-formed GGUF."""
    info = read_gguf(path)
    ctx = info.context_length
    template = info.chat_template
    name = info.name
    return ModelFacts(
        info.architecture or None,
        ctx if isinstance(ctx, int) and ctx > 0 else None,
        template if isinstance(template, str) and template.strip() else None,
        name if isinstance(name, str) and name.strip() else None,
        info.file_type if isinstance(info.file_type, int) else None,
    )
