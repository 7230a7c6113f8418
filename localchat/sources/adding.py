"""`localchat add` and `localchat import`: install one GGUF from a hub, a URL or a local path, then write
a user catalog entry for it with what the file itself says (context length, chat template, quant) and the
verified sha256, so later pulls of that id are checked against it."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from localchat.catalog import ModelEntry, SourceSpec, check_file_name, check_model_id
from localchat.errors import CatalogError, LocalchatError, SourceError
from localchat.registry import InstalledModel
from localchat.sources.facts import ModelFacts, read_facts
from localchat.sources.search import SPLIT_RE, quant_of, split_parts
from localchat.usercatalog import append_entry, check_new_entry, render_entry

ADDABLE = ("hf", "modelscope", "url")


@dataclass
class Added:
    entry: ModelEntry
    installed: InstalledModel
    facts: ModelFacts


def parse_source(text: str) -> tuple[str, str]:
    """`hf:OWNER/REPO`, `modelscope:OWNER/REPO` or `url:https://...` -> (kind, location)."""
    kind, sep, location = text.partition(":")
    if text.startswith(("http://", "https://")):
        kind, location = "url", text
    elif not sep or kind not in ADDABLE or not location:
        raise SourceError(f"'{text}' is not a model source",
                          hint="write hf:OWNER/REPO, modelscope:OWNER/REPO or url:https://HOST/PATH/FILE.gguf")
    if kind in ("hf", "modelscope") and not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", location):
        raise SourceError(f"'{location}' is not a repository id", hint="write it as OWNER/REPO")
    return kind, location


def add_from_source(svc, source: str, file: str | None, model_id: str | None = None, progress=None,
                    cancel=None) -> Added:
    kind, location = parse_source(source)
    if file is None:
        if kind != "url":
            raise SourceError(f"say which file of {location} to add",
                              hint=f"`localchat search {location.split('/')[-1]}` lists its GGUF files")
        file = unquote(Path(urlsplit(location).path).name)
    files = _files_for(file)
    spec = SourceSpec(kind, location)
    return _install_and_record(svc, files, spec, model_id, progress, cancel, pin="hub" if kind != "url" else "url")


def import_file(svc, path: str | Path, model_id: str | None = None, progress=None, cancel=None) -> Added:
    src = Path(path).expanduser().resolve()
    if not src.is_file():
        raise SourceError(f"{src} is not a file", hint="give the path of a .gguf file")
    files = _files_for(src.name)
    missing = [n for n in files if not (src.parent / n).is_file()]
    if missing:
        raise SourceError(f"{src.name} is part 1 of a split GGUF, but {', '.join(missing)} is not beside it",
                          hint="put all parts in one folder")
    return _install_and_record(svc, files, SourceSpec("file", str(src)), model_id, progress, cancel, pin="file")


def _files_for(first: str) -> tuple[str, ...]:
    problem = check_file_name(first)
    if problem:
        raise SourceError(f"file name '{first}' {problem}")
    m = SPLIT_RE.match(first)
    if m and int(m["no"]) != 1:
        raise SourceError(f"{first} is not the first part of its split GGUF",
                          hint=f"give the first part: {m['stem']}-00001-of-{m['count']}.gguf")
    return tuple(split_parts(first) or [first])


def default_id(file: str) -> str:
    m = SPLIT_RE.match(file)
    stem = m["stem"] if m else file[: -len(".gguf")]
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", stem.lower()).strip("-._")
    return out[:128] or "model"


def _install_and_record(svc, files: tuple[str, ...], spec: SourceSpec, model_id: str | None, progress, cancel,
                        pin: str) -> Added:
    model_id = model_id or default_id(files[0])
    problem = check_model_id(model_id)
    if problem:
        raise CatalogError(f"invalid id '{model_id}'", hint=problem)
    if model_id in svc.catalog:
        raise CatalogError(f"'{model_id}' is already in the catalog", hint="pick another id with --id ID")
    source = {spec.kind: spec.location}
    catalog_path = svc.paths.user_catalog
    check_new_entry(catalog_path, render_entry({"id": model_id, "files": list(files), "sources": [source]}))
    entry = ModelEntry(id=model_id, name=model_id, files=files, sources=(spec,), origin="user")
    installed = svc.installer.install(entry, progress=progress, cancel=cancel)
    try:
        facts = read_facts(installed.path)
        digests = {f.name: f.sha256 for f in installed.files}
        fields = {
            "id": model_id,
            "name": facts.name or model_id,
            "quant": quant_of(files[0]) or facts.quant,
            "size": installed.size,
            "sha256": digests[files[0]] if len(files) == 1 else digests,
            "context": facts.context_length,
            "template": template_choice(facts)[0],
            "files": list(files),
            "sources": [source],
        }
        how = {"hub": "verified against the hub's sha256", "url": "sha256 recorded at first download",
               "file": "sha256 recorded at import"}[pin]
        stamp = time.strftime("%Y-%m-%d")
        entry = append_entry(catalog_path, render_entry(fields, f"added by localchat on {stamp}; {how}"))
    except LocalchatError:
        svc.installer.remove(model_id)  # no catalog entry, no orphan files
        raise
    return Added(entry, installed, facts)


def template_choice(facts: ModelFacts) -> tuple[str, str]:
    """The catalog template for a file and why: a native renderer only where it renders probe conversations
    exactly as the file's own template does (templates.native_equivalent), the file's own template
    (sandboxed) otherwise, ChatML when the file has none."""
    from localchat.templates import native_equivalent

    if facts.chat_template is None:
        return "chatml", "the file has no chat template"
    name = native_equivalent(facts.chat_template)
    if name is not None:
        return name, f"the file's own template renders exactly as the native {name} renderer"
    return "gguf", "the file's own template, which no native renderer reproduces"


def template_for(facts: ModelFacts) -> str:
    return template_choice(facts)[0]
