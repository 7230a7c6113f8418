"""Model bundles (.lcb): one file that carries installed models onto a machine that never sees a network.

A bundle is an uncompressed POSIX (pax) tar stream, readable by any `tar`:

    manifest.json          first, so `inspect` reads a few KB of a many-GB file:
                           {"format": "localchat-bundle", "version": 1, "created": ..., "localchat": ...,
                            "models": [{"id", "entry": <catalog data, as in models.yaml>,
                                        "files": [{"name", "member", "size", "sha256"}]}]}
    models/<id>/<file>     each model file, in manifest order

Export streams each file straight from models/ into the tar (no temporary copy), hashing the bytes it
writes; the manifest carries the hashes recorded at install, and a file whose bytes no longer match them
stops the export. Import trusts nothing in the file: the manifest is validated like a models.yaml entry,
every member must be a regular file at exactly the path the manifest implies (no `..`, absolute paths,
links or devices), and every byte is hashed while it is unpacked into downloads/. Only when every member
of the bundle matches is anything installed, through the Installer's own verify/move/record step.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Iterable, Iterator

from localchat.catalog import ModelEntry, append_user_entry, entry_from_dict, entry_to_dict
from localchat.errors import BundleError, CatalogError, DiskFullError, IntegrityError, NotInstalledError
from localchat.registry import InstalledModel, disk_free
from localchat.sources.base import CHUNK, CancelToken, FetchContext, FetchedFile, HashingWriter, ProgressCallback, ProgressMeter

FORMAT = "localchat-bundle"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST = 16 << 20  # a manifest is a few KB; anything near this is not one
BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the archive to whole records
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
    entry_data: dict[str, Any]  # the same, as written in the manifest (what goes into the user catalog)
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


# --- export --------------------------------------------------------------------------------------


def export_bundle(services, ids: Iterable[str], out_path: str | os.PathLike[str], progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None, overwrite: bool = False) -> BundleManifest:
    """Write the installed models `ids` into one bundle file; returns its manifest.

    The output appears under its final name only when complete (it is written as NAME.partial first).
    """
    from localchat import __version__

    out_path = Path(out_path).expanduser()
    cancel = cancel or CancelToken()
    if out_path.exists() and not overwrite:
        raise BundleError(f"{out_path} already exists", hint="choose another name, or remove it first")
    if out_path.is_dir():
        raise BundleError(f"{out_path} is a folder", hint="give a file name, e.g. -o models.lcb")
    models, sources = [], {}
    for model_id in dict.fromkeys(ids):
        model, folder = _export_model(services, model_id)
        models.append(model)
        sources[model.id] = folder
    if not models:
        raise BundleError("no models to export", hint="name at least one installed model")
    manifest = BundleManifest(out_path, VERSION, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), __version__,
                              tuple(models))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    need = manifest.size + (16 << 20)
    if disk_free(out_path.parent) < need:
        raise DiskFullError(f"not enough disk space for the bundle: it needs {need / 1e9:.2f} GB at {out_path.parent}",
                            hint="free some space or write the bundle to another disk (-o /media/usb/models.lcb)")
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        with open(partial, "wb") as out:
            _write_member(out, MANIFEST, _manifest_bytes(manifest))
            for model in models:
                meter = ProgressMeter(progress, model.id, f"bundle:{out_path.name}")
                for f in model.files:
                    _stream_file(out, sources[model.id] / f.name, f, meter, cancel)
            out.write(bytes(BLOCK * 2))  # end of archive, then pad to a whole record as tar does
            out.write(bytes(-out.tell() % RECORD))
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return manifest


def _export_model(services, model_id: str) -> tuple[BundleModel, Path]:
    entry = services.entry(model_id)
    if entry.is_remote:
        raise BundleError(f"'{entry.id}' is a remote engine ({entry.endpoint}); it has no files to bundle")
    rec = services.registry.get(entry.id)
    if rec is None or not services.registry.is_installed(entry.id):
        raise NotInstalledError(f"'{entry.id}' is not installed, so it cannot be bundled", hint=f"run `localchat pull {entry.id}`")
    recorded = {f.name: f for f in rec.files}
    if [f.name for f in rec.files] != list(entry.files):
        raise BundleError(f"'{entry.id}' was installed with other files than its catalog entry lists",
                          hint=f"install it again: `localchat pull {entry.id}`")
    folder = Path(rec.directory)
    for f in rec.files:
        pinned = entry.sha256.get(f.name)
        if pinned and pinned != f.sha256:
            raise IntegrityError(f"the installed {f.name} does not match the catalog's sha256 for '{entry.id}'",
                                 hint=f"install it again: `localchat pull {entry.id}`")
        size = (folder / f.name).stat().st_size
        if size != f.size:
            raise IntegrityError(f"{f.name} of '{entry.id}' has {size} bytes, {f.size} were installed",
                                 hint="run `localchat verify` and install it again")
    # The importer pins exactly the bytes verified here.
    data = entry_to_dict(replace(entry, sha256={f.name: f.sha256 for f in rec.files}, size=rec.size))
    files = tuple(BundleFile(n, member_name(entry.id, n), recorded[n].size, recorded[n].sha256) for n in entry.files)
    return BundleModel(entry, data, files), folder


def _manifest_bytes(manifest: BundleManifest) -> bytes:
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


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, int(time.time()), tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")  # pax: sizes past 8 GiB stay exact


def _write_member(out: BinaryIO, name: str, data: bytes) -> None:
    out.write(_header(name, len(data)))
    out.write(data)
    out.write(bytes(-len(data) % BLOCK))


def _stream_file(out: BinaryIO, src: Path, f: BundleFile, meter: ProgressMeter, cancel: CancelToken) -> None:
    """Copy one model file into the tar, hashing the very bytes written; they must match the manifest."""
    import hashlib

    out.write(_header(f.member, f.size))
    h = hashlib.sha256()
    buf = memoryview(bytearray(CHUNK * 4))
    done = 0
    meter.start(f.name, "export", f.size)
    with open(src, "rb", buffering=0) as inp:
        while done < f.size:
            cancel.check()
            n = inp.readinto(buf[: min(len(buf), f.size - done)])
            if not n:
                break
            out.write(buf[:n])
            h.update(buf[:n])
            done += n
            meter.update(f.name, "export", done, f.size)
        extra = inp.read(1)
    if done != f.size or extra or h.hexdigest() != f.sha256:
        raise IntegrityError(f"{src} changed since it was installed (size or sha256 differ); the bundle was not written",
                             hint="run `localchat verify` and install the model again")
    out.write(bytes(-f.size % BLOCK))
    meter.update(f.name, "export", done, f.size, force=True)


# --- reading -------------------------------------------------------------------------------------


def inspect_bundle(path: str | os.PathLike[str]) -> BundleManifest:
    """The bundle's manifest (validated), reading only the start of the file."""
    with _BundleReader(Path(path)) as reader:
        return reader.manifest


def verify_bundle(path: str | os.PathLike[str], progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> BundleManifest:
    """Hash every member against the manifest without installing anything; raises on the first bad one."""
    cancel = cancel or CancelToken()
    with _BundleReader(Path(path)) as reader:
        for model, f, info in reader.members():
            ctx = FetchContext(model.id, Path(os.devnull), ProgressMeter(progress, model.id, "bundle"), cancel)
            with HashingWriter(Path(os.devnull), f.name, f.size, ctx, phase="verify") as sink:
                copied = reader.copy(info, sink)
                reader.check(f, copied, sink.finish())
        return reader.manifest


def import_bundle(services, path: str | os.PathLike[str], progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> list[InstalledModel]:
    """Install every model of a bundle, all or nothing; new ids are added to the user catalog."""
    path = Path(path).expanduser()
    cancel = cancel or CancelToken()
    staged: dict[str, list[FetchedFile]] = {}
    written: list[Path] = []
    with _BundleReader(path) as reader:
        manifest = reader.manifest
        plan = _plan(services, manifest)
        downloads = services.paths.downloads_dir
        need = manifest.size + (64 << 20)
        if disk_free(downloads) < need:
            raise DiskFullError(f"not enough disk space to import {path.name}: it needs {need / 1e9:.2f} GB at {downloads}",
                                hint="free some space (`localchat rm ID` removes a model) and import again")
        try:
            for model, f, info in reader.members():
                work_dir = downloads / model.id
                work_dir.mkdir(parents=True, exist_ok=True)
                dest = work_dir / (f.name + ".bundle-part")
                written.append(dest)
                ctx = FetchContext(model.id, work_dir, ProgressMeter(progress, model.id, f"bundle:{path.name}"), cancel)
                with HashingWriter(dest, f.name, f.size, ctx, phase="import") as writer:
                    copied = reader.copy(info, writer)
                    fetched = writer.finish()
                reader.check(f, copied, fetched)
                fetched.expected_sha256 = f.sha256
                staged.setdefault(model.id, []).append(fetched)
            from localchat.sources import check_gguf_files

            for model in manifest.models:  # structure too, before anything is installed
                check_gguf_files([s.path for n in model.entry.files for s in staged[model.id] if s.name == n])
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
    installed = []
    for model in manifest.models:
        entry, _ = plan[model.id]
        ctx = FetchContext(model.id, downloads / model.id, ProgressMeter(progress, model.id, f"bundle:{path.name}"),
                           cancel, services.offline)
        installed.append(services.installer.install_fetched(entry, f"bundle:{path.name}", staged[model.id], ctx))
    for model in manifest.models:
        if plan[model.id][1]:
            append_user_entry(services.paths.user_catalog, model.entry_data)
    services.reload_catalog()
    return installed


def _plan(services, manifest: BundleManifest) -> dict[str, tuple[ModelEntry, bool]]:
    """For each model: the catalog entry it installs under, and whether that entry is new (to be added).

    A model already in the catalog must agree with it (same files; the catalog's pinned sha256, if any):
    a bundle cannot quietly replace a known model with other bytes.
    """
    catalog = services.catalog
    plan = {}
    for model in manifest.models:
        if model.id not in catalog:
            plan[model.id] = (model.entry, True)
            continue
        existing = catalog.get(model.id)
        if existing.is_remote or tuple(existing.files) != tuple(f.name for f in model.files):
            raise BundleError(
                f"'{model.id}' is already in your catalog ({existing.where}) with other files than the bundle's "
                f"({', '.join(f.name for f in model.files)}); nothing was imported",
                hint="remove or rename that entry in your user catalog (`localchat doctor` shows where), then import again")
        for f in model.files:
            pinned = existing.sha256.get(f.name)
            if pinned and pinned != f.sha256:
                raise IntegrityError(
                    f"the bundle's {f.member} claims sha256 {f.sha256[:12]}…, but the catalog pins {pinned[:12]}… for "
                    f"'{model.id}' ({existing.where}); nothing was imported",
                    hint="the bundle was made from another file or was tampered with: get a bundle from a trusted copy")
        plan[model.id] = (existing, False)
    return plan


class _BundleReader:
    """Reads a bundle file without trusting it: the manifest first, then members checked one by one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = open(path, "rb")
        except FileNotFoundError:
            raise BundleError(f"{path}: no such file", hint="give the path of a .lcb bundle") from None
        except IsADirectoryError:
            raise BundleError(f"{path} is a folder", hint="give the path of a .lcb bundle") from None
        except OSError as exc:
            raise BundleError(f"cannot read {path} ({exc.strerror})") from None
        try:
            try:
                self._tar = tarfile.open(fileobj=self._file, mode="r:")
            except tarfile.TarError as exc:
                raise BundleError(f"{path} is not a localchat bundle (not a tar archive: {exc})",
                                  hint="make bundles with `localchat bundle export`") from None
            self.manifest = self._read_manifest()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "_BundleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def _read_manifest(self) -> BundleManifest:
        first = self._tar.next()  # the member tarfile already read; later next() calls go on from here
        if first is None or first.name != MANIFEST or not first.isreg():
            raise BundleError(f"{self.path} is not a localchat bundle (it does not start with {MANIFEST})",
                              hint="make bundles with `localchat bundle export`")
        if first.size > MAX_MANIFEST:
            raise BundleError(f"{self.path}: {MANIFEST} is {first.size} bytes; that is not a bundle manifest")
        self._file.seek(first.offset_data)
        data = self._file.read(first.size)
        if len(data) != first.size:
            raise BundleError(f"{self.path} is truncated inside {MANIFEST}", hint="copy the bundle again")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BundleError(f"{self.path}: {MANIFEST} is not valid JSON ({exc})") from None
        return parse_manifest(doc, self.path)

    def members(self) -> Iterator[tuple[BundleModel, BundleFile, tarfile.TarInfo]]:
        """Each model file's member, in tar order; refuses anything the manifest does not name exactly."""
        expected = {f.member: (m, f) for m in self.manifest.models for f in m.files}
        seen: set[str] = set()
        last = MANIFEST
        while True:
            try:
                info = self._tar.next()
            except tarfile.TarError as exc:
                raise BundleError(f"{self.path} is truncated or damaged after member '{last}' ({exc}); nothing was imported",
                                  hint="copy the bundle again") from None
            if info is None:
                break
            problem = _unsafe(info)
            if problem:
                raise BundleError(f"{self.path}: member '{info.name}' {problem}; nothing was imported",
                                  hint="this bundle was not made by localchat or was tampered with")
            if info.name not in expected or info.name in seen:
                what = "appears twice" if info.name in seen else "is not in the manifest"
                raise BundleError(f"{self.path}: member '{info.name}' {what}; nothing was imported",
                                  hint="this bundle was not made by localchat or was tampered with")
            model, f = expected[info.name]
            if info.size != f.size:
                raise IntegrityError(f"{self.path}: member '{info.name}' has {info.size} bytes, the manifest says {f.size}; "
                                     "nothing was imported", hint="the bundle was tampered with or damaged")
            seen.add(info.name)
            last = info.name
            yield model, f, info
        missing = [m for m in expected if m not in seen]
        if missing:
            raise BundleError(f"{self.path} is truncated: member '{missing[0]}' is missing; nothing was imported",
                              hint="copy the bundle again (compare its size with the original)")

    def copy(self, info: tarfile.TarInfo, writer: HashingWriter) -> int:
        self._file.seek(info.offset_data)
        return writer.copy_from(self._file, limit=info.size)

    def check(self, f: BundleFile, copied: int, fetched: FetchedFile) -> None:
        if copied != f.size:
            raise BundleError(f"{self.path} is truncated: member '{f.member}' ends after {copied} of {f.size} bytes; "
                              "nothing was imported", hint="copy the bundle again")
        if fetched.sha256 != f.sha256:
            raise IntegrityError(f"{self.path}: member '{f.member}' does not match its sha256 in the manifest "
                                 f"(got {fetched.sha256[:12]}…, expected {f.sha256[:12]}…); nothing was imported",
                                 hint="the bundle was damaged in transit or tampered with: copy it again from the source")


def _unsafe(info: tarfile.TarInfo) -> str | None:
    if not info.isreg():
        kind = "a link" if info.issym() or info.islnk() else "a folder" if info.isdir() else "a device or special file"
        return f"is {kind}, not a regular file"
    parts = PurePosixPath(info.name).parts
    if info.name.startswith("/") or "\\" in info.name or "\x00" in info.name or ".." in parts:
        return "points outside the bundle (absolute path or '..')"
    return None


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
    try:
        entry = entry_from_dict(raw["entry"], where)
    except CatalogError as exc:
        raise BundleError(f"the bundle's catalog data is invalid: {exc.message}", hint="the bundle is damaged or hostile") from None
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


__all__ = ["BundleFile", "BundleManifest", "BundleModel", "export_bundle", "import_bundle", "inspect_bundle",
           "verify_bundle", "parse_manifest", "FORMAT", "VERSION"]
