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

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from localchat.bundle.archive import BundleReader, stream_file, write_end, write_member
from localchat.bundle.manifest import (
    FORMAT, MANIFEST, VERSION, BundleFile, BundleManifest, BundleModel, manifest_bytes, member_name, parse_manifest,
)
from localchat.catalog import ModelEntry, entry_to_dict
from localchat.errors import BundleError, DiskFullError, IntegrityError, NotInstalledError
from localchat.fsutil import atomic_output, disk_free
from localchat.registry import InstalledModel
from localchat.sources.base import CancelToken, FetchContext, FetchedFile, HashingWriter, ProgressCallback, ProgressMeter
from localchat.usercatalog import append_entry, render_entry

__all__ = ["BundleFile", "BundleManifest", "BundleModel", "export_bundle", "import_bundle", "inspect_bundle",
           "verify_bundle", "parse_manifest", "FORMAT", "VERSION"]


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
    with atomic_output(out_path) as out:  # a cancelled or failed export leaves no half bundle behind
        write_member(out, MANIFEST, manifest_bytes(manifest))
        for model in models:
            meter = ProgressMeter(progress, model.id, f"bundle:{out_path.name}")
            for f in model.files:
                stream_file(out, sources[model.id] / f.name, f, meter, cancel)
        write_end(out)
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


def inspect_bundle(path: str | os.PathLike[str]) -> BundleManifest:
    """The bundle's manifest (validated), reading only the start of the file."""
    with BundleReader(Path(path)) as reader:
        return reader.manifest


def verify_bundle(path: str | os.PathLike[str], progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> BundleManifest:
    """Hash every member against the manifest without installing anything; raises on the first bad one."""
    cancel = cancel or CancelToken()
    with BundleReader(Path(path)) as reader:
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
    with BundleReader(path) as reader:
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
            _discard(written)
            raise
    installed = []
    try:
        for model in manifest.models:
            entry, _ = plan[model.id]
            ctx = FetchContext(model.id, downloads / model.id, ProgressMeter(progress, model.id, f"bundle:{path.name}"),
                               cancel, services.offline)
            installed.append(services.installer.install_fetched(entry, f"bundle:{path.name}", staged[model.id], ctx))
    except BaseException:  # a disk error mid-way: what was installed is complete and recorded; drop the rest
        _discard(written)
        raise
    stamp = time.strftime("%Y-%m-%d")
    for model in manifest.models:
        if plan[model.id][1]:
            append_entry(services.paths.user_catalog,
                         render_entry(model.entry_data, f"imported from a bundle on {stamp}; sha256 verified"))
    services.reload_catalog()
    return installed


def _discard(staged: list[Path]) -> None:
    for p in staged:
        p.unlink(missing_ok=True)
        try:
            p.parent.rmdir()  # only when empty: a resumable download of the same model stays
        except OSError:
            pass


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
