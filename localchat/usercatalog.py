"""Adding entries to the user's models.yaml. Entries are appended as text, so the user's comments and
layout stay as they wrote them, and the file is only replaced (atomically) by text that validates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from localchat.catalog import ModelEntry, parse_text
from localchat.fsutil import atomic_write_text
from localchat.errors import CatalogError
from localchat.yamlio import scalar as yaml_scalar

_PLAIN = re.compile(r"^[A-Za-z0-9/~][A-Za-z0-9 ._/:+~-]*$")
FIELD_ORDER = ("id", "name", "quant", "size", "sha256", "context", "template", "files", "sources")


def render_entry(fields: dict[str, Any], comment: str | None = None) -> str:
    """One catalog entry as YAML text (`- id: ...`), fields in the catalog's usual order."""
    lines = [f"# {comment}"] if comment else []
    first = True
    for key in FIELD_ORDER + tuple(k for k in fields if k not in FIELD_ORDER):
        value = fields.get(key)
        if value is None or value == [] or value == {}:
            continue
        lead = "- " if first else "  "
        first = False
        if key == "files":
            lines.append(f"{lead}files:")
            lines += [f"    - {_scalar(name)}" for name in value]
        elif key == "sources":
            lines.append(f"{lead}sources:")
            for source in value:
                items = list(source.items())
                lines.append(f"    - {items[0][0]}: {_value(items[0][1])}")
                lines += [f"      {k}: {_value(v)}" for k, v in items[1:]]
        elif isinstance(value, dict):
            lines.append(f"{lead}{key}:")
            lines += [f"    {_scalar(k)}: {_scalar(v)}" for k, v in value.items()]
        else:
            lines.append(f"{lead}{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def append_entry(path: Path, text: str) -> ModelEntry:
    """Append one rendered entry to the user catalog at `path` and return it as the catalog reads it.
    Raises CatalogError, leaving the file untouched, when the result would not validate."""
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read the user catalog ({exc})") from None
    if old and not old.endswith("\n"):
        old += "\n"
    new = old + ("\n" if old.strip() else "") + text
    before = {e.id for e in parse_text(old, path, "user")} if old.strip() else set()
    added = [e for e in parse_text(new, path, "user") if e.id not in before]
    if len(added) != 1:
        raise CatalogError(f"{path}: the new entry did not read back as one entry", hint="check the file by hand")
    atomic_write_text(path, new)
    return added[0]


def check_new_entry(path: Path, text: str) -> ModelEntry:
    """Validate an entry as if appended, without writing anything."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    entries = parse_text(old + ("\n" if old and not old.endswith("\n") else "") + "\n" + text, path, "user")
    return entries[-1]


def _value(value: Any) -> str:
    """A scalar, or a flow list of scalars (`pip: [part1==1.0, part2==1.0]`, a model over several wheels)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    # Plain when YAML reads it back as this very string (not a number, a date, true, null...).
    if _PLAIN.match(text) and not text.endswith(":") and ": " not in text and " #" not in text and _reads_as(text):
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def _reads_as(text: str) -> bool:
    try:
        return bool(yaml_scalar(text) == text)
    except ValueError:
        return False
