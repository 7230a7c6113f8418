"""A bundle's manifest: what it carries (catalog data, file names, sizes, sha256), validated strictly."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localchat.catalog import ModelEntry, parse_text
from localchat.errors import BundleError, CatalogError, IntegrityError

FORMAT = "localchat-bundle"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST = 16 << 20  # a manifest is a few KB; anything near this is not one
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BundleFile:
    name: str  # the catalog's file name
    member: str  # its path inside the tar: models/<id>/<name>
    size: int
    sha256: str


@dataclass(frozen=True)
class BundleModel:
    entry: ModelEntry  # the catalog data, validated as a models.yaml entry would be
    entry_data: dict[str, Any]  # the same as data: in the manifest, and (rendered) in the user catalog
    files: tuple[BundleFile, ...]

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class BundleManifest:
    path: Path
    version: int
    created: str
    localchat_version: str
    models: tuple[BundleModel, ...]

    @property
    def size(self) -> int:
        return sum(m.size for m in self.models)

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.models]


def member_name(model_id: str, file_name: str) -> str:
    return f"models/{model_id}/{file_name}"


def manifest_bytes(manifest: BundleManifest) -> bytes:
    doc = {
        "format": FORMAT,
        "version": manifest.version,
        "created": manifest.created,
        "localchat": manifest.localchat_version,
        "models": [
            {"id": m.id, "entry": m.entry_data,
             "files": [{"name": f.name, "member": f.member, "size": f.size, "sha256": f.sha256} for f in m.files]}
            for m in manifest.models
        ],
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_manifest(doc: Any, path: Path) -> BundleManifest:
    """Validate a manifest document; every field is checked, the catalog data as strictly as models.yaml."""
    where = f"{path}!{MANIFEST}"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"{path} is not a localchat bundle (unknown format in {MANIFEST})",
                          hint="make bundles with `localchat bundle export`")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{where}: unknown bundle format version {version!r}")
    if version > VERSION:
        raise BundleError(f"{path} was made by a newer localchat (bundle format {version}; this one reads {VERSION})",
                          hint="upgrade localchat on this machine, or export with the older version")
    raw_models = doc.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise BundleError(f"{where}: lists no models")
    models, ids = [], set()
    for i, raw in enumerate(raw_models):
        models.append(_parse_model(raw, f"{where} models[{i}]"))
        if models[-1].id in ids:
            raise BundleError(f"{where}: model '{models[-1].id}' is listed twice")
        ids.add(models[-1].id)
    return BundleManifest(path, version, str(doc.get("created", "")), str(doc.get("localchat", "")), tuple(models))


def _parse_model(raw: Any, where: str) -> BundleModel:
    if not isinstance(raw, dict) or not isinstance(raw.get("entry"), dict) or not isinstance(raw.get("files"), list):
        raise BundleError(f"{where}: each model needs 'entry' and 'files'")
    entry = _entry(raw["entry"], where)
    if raw.get("id") != entry.id or entry.is_remote:
        raise BundleError(f"{where}: 'id' must match its catalog entry, and the entry must have files")
    files = []
    for item in raw["files"]:
        if not isinstance(item, dict):
            raise BundleError(f"{where}: each file must be a mapping")
        name, size, sha, member = item.get("name"), item.get("size"), item.get("sha256"), item.get("member")
        if name not in entry.files:  # so it passed the catalog's plain-file-name check
            raise BundleError(f"{where}: file {name!r} is not one of the entry's files")
        if member != member_name(entry.id, name):
            raise BundleError(f"{where}: member {member!r} of {name} must be '{member_name(entry.id, name)}'",
                              hint="the bundle is damaged or hostile")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError(f"{where}: size of {name} must be a whole number of bytes")
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise BundleError(f"{where}: sha256 of {name} must be 64 lowercase hex digits")
        pinned = entry.sha256.get(name)
        if pinned is not None and pinned != sha:
            raise IntegrityError(f"{where}: the manifest contradicts itself about the sha256 of {name}; nothing was imported",
                                 hint="the bundle was tampered with")
        files.append(BundleFile(name, member, size, sha))
    if [f.name for f in files] != list(entry.files):
        raise BundleError(f"{where}: 'files' must list each of the entry's files once, in order")
    return BundleModel(entry, raw["entry"], tuple(files))


def _entry(data: dict, where: str) -> ModelEntry:
    """The catalog entry exactly as it would be appended to the user catalog (rendered), validated."""
    from localchat.usercatalog import render_entry

    try:
        text = render_entry(data)
        entries = parse_text(text, Path(where), "user")
    except CatalogError as exc:
        raise BundleError(f"the bundle's catalog data is invalid: {exc.message}", hint="the bundle is damaged or hostile") from None
    except (AttributeError, TypeError, ValueError, IndexError):  # values of the wrong shape
        raise BundleError(f"{where}: the catalog data is malformed", hint="the bundle is damaged or hostile") from None
    if len(entries) != 1:
        raise BundleError(f"{where}: the catalog data must be exactly one entry", hint="the bundle is damaged or hostile")
    return entries[0]
