"""Finding GGUF repositories on the hubs (`localchat search`): shared result types and grouping."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from localchat.errors import LocalchatError
from localchat.sources.base import require_network

HUBS = ("hf", "modelscope")
SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d_(?:K_[SMLX]L?|K|[0-9]|NL|XXS|XS|S|M|L)|Q\d_K|BF16|F16|F32|FP16)(?![A-Za-z0-9])",
    re.IGNORECASE,
)


@dataclass
class HubFile:
    name: str  # the file to `localchat add` (the first part of a split GGUF)
    size: int  # bytes, all parts together
    parts: int = 1
    quant: str | None = None


@dataclass
class HubRepo:
    hub: str  # hf | modelscope
    repo: str  # OWNER/REPO
    files: list[HubFile] = field(default_factory=list)
    downloads: int | None = None


def quant_of(file_name: str) -> str | None:
    """The quantization a GGUF's name says (Q4_K_M, IQ3_XS, Q8_0, F16, ...), or None."""
    found = _QUANT_RE.findall(file_name)
    return found[-1].upper() if found else None


def split_parts(first: str) -> list[str] | None:
    """All part names of a split GGUF given its first part, or None if `first` is not a first part."""
    m = SPLIT_RE.match(first)
    if not m or int(m["no"]) != 1:
        return None
    count = int(m["count"])
    return [f"{m['stem']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def gguf_files(listing: Iterable[tuple[str, int]]) -> list[HubFile]:
    """Top-level .gguf files of a repository listing (path, size), split parts folded into one row."""
    plain: dict[str, int] = {}
    for path, size in listing:
        if "/" not in path and path.lower().endswith(".gguf"):
            plain[path] = int(size or 0)
    out = []
    for name, size in plain.items():
        m = SPLIT_RE.match(name)
        if m is None:
            out.append(HubFile(name, size, 1, quant_of(name)))
        elif int(m["no"]) == 1:
            parts = split_parts(name) or [name]
            if all(p in plain for p in parts):
                out.append(HubFile(name, sum(plain[p] for p in parts), len(parts), quant_of(m["stem"] + ".gguf")))
    return sorted(out, key=lambda f: (f.size, f.name))


def search_hubs(query: str, hubs: Iterable[str] = HUBS, limit: int = 8,
                offline: bool = False) -> tuple[list[HubRepo], list[str]]:
    """Search each hub; returns the repositories with GGUF files and one line per hub that failed."""
    require_network(offline, "searching the model hubs")
    results: list[HubRepo] = []
    problems: list[str] = []
    for hub in hubs:
        try:
            if hub == "hf":
                from localchat.sources import hf

                results += hf.search_repos(query, limit)
            elif hub == "modelscope":
                from localchat.sources import modelscope

                results += modelscope.search_repos(query, limit)
            else:
                raise LocalchatError(f"unknown hub '{hub}'", hint="use hf or modelscope")
        except LocalchatError as exc:
            problems.append(f"{hub}: {exc}")
    return results, problems


def matches(repo_id: str, words: list[str]) -> bool:
    low = repo_id.lower()
    return all(w.lower() in low for w in words)
