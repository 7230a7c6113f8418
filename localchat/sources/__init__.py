"""Installing models: try an entry's sources in order, verify sha256 and GGUF structure, move into place."""

from __future__ import annotations

import importlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from localchat.catalog import ModelEntry
from localchat.errors import (
    Cancelled, DiskFullError, GGUFError, IntegrityError, LocalchatError, NotInstalledError, OfflineError, SourceError,
)
from localchat.fsutil import disk_free
from localchat.registry import InstalledFile, InstalledModel, InstalledModels
from localchat.sources.base import (
    CancelToken, DownloadProgress, FetchContext, FetchedFile, ProgressCallback, ProgressMeter, sha256_file,
)

__all__ = ["Installer", "DownloadProgress", "CancelToken", "ProgressCallback", "VerifyReport", "check_gguf_files"]

# kind -> "module:class"; each hub client library is imported only inside its own module.
SOURCE_CLASSES = {
    "pip": "localchat.sources.pip:PipSource",
    "hf": "localchat.sources.hf:HFSource",
    "modelscope": "localchat.sources.modelscope:ModelScopeSource",
    "url": "localchat.sources.url:URLSource",
    "file": "localchat.sources.file:FileSource",
}


def source_for(kind: str):
    target = SOURCE_CLASSES.get(kind)
    if target is None:
        raise SourceError(f"unknown source kind '{kind}'", hint="use one of " + ", ".join(SOURCE_CLASSES))
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SourceError(f"the {kind} source is not available in this installation ({exc.name} is missing)",
                          hint="reinstall localchat") from None
    return getattr(module, cls_name)()


@dataclass
class VerifyReport:
    model_id: str
    ok: bool
    problems: list[str]


class Installer:
    def __init__(self, registry: InstalledModels, downloads_dir: Path, offline: bool = False) -> None:
        self.registry = registry
        self.downloads_dir = downloads_dir
        self.offline = offline

    def install(self, entry: ModelEntry, *, source: str | None = None, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> InstalledModel:
        """Fetch `entry` from its first source that works (or the pinned kind), verify, install, record."""
        if entry.is_remote:
            raise SourceError(f"'{entry.id}' is a remote engine ({entry.endpoint}); there is nothing to download")
        specs = [s for s in entry.sources if source is None or s.kind == source]
        if not specs:
            kinds = ", ".join(s.kind for s in entry.sources) or "none"
            raise SourceError(f"'{entry.id}' has no {source} source" if source else f"'{entry.id}' has no sources",
                              hint=f"its sources: {kinds}")
        self._check_space(entry)
        cancel = cancel or CancelToken()
        failures: list[str] = []
        for spec in specs:
            work_dir = self.downloads_dir / entry.id
            work_dir.mkdir(parents=True, exist_ok=True)
            ctx = FetchContext(entry.id, work_dir, ProgressMeter(progress, entry.id, spec.label()), cancel, self.offline)
            try:
                fetched = source_for(spec.kind).fetch(entry, spec, ctx)
                return self.install_fetched(entry, spec.label(), fetched, ctx)
            except (Cancelled, IntegrityError, DiskFullError):
                raise
            except OfflineError as exc:
                if len(specs) == 1:
                    raise
                failures.append(f"{spec.label()}: {exc.message}")
            except LocalchatError as exc:
                failures.append(f"{spec.label()}: {exc}")
        if self.offline and all("offline" in f or "needs" in f for f in failures):
            raise OfflineError(f"installing '{entry.id}' needs the network, and offline mode is on",
                               hint="turn it off (`--offline` / config offline: false) or `localchat import` a local copy")
        raise SourceError(f"could not install '{entry.id}' from any source:\n  " + "\n  ".join(failures),
                          hint="check the network or mirror settings, or pin a source with --source")

    def _check_space(self, entry: ModelEntry) -> None:
        if not entry.size:
            return
        have = disk_free(self.downloads_dir)
        need = int(entry.size * 1.05) + (64 << 20)
        if have < need:
            raise DiskFullError(
                f"not enough disk space for '{entry.id}': it needs about {entry.size / 1e9:.2f} GB, "
                f"{have / 1e9:.2f} GB is free at {self.downloads_dir}",
                hint="free some space (`localchat rm ID` removes a model) and run the command again",
            )

    def install_fetched(self, entry: ModelEntry, source: str, fetched: list[FetchedFile], ctx: FetchContext) -> InstalledModel:
        """Verify files a source (or a bundle) wrote under ctx.work_dir, move them into place, record them.

        `source` is what the registry records as the origin ("pip:NAME==1.0", "bundle:models.lcb").
        """
        by_name = {f.name: f for f in fetched}
        missing = [n for n in entry.files if n not in by_name]
        if missing:
            raise SourceError(f"{source} did not provide {', '.join(missing)}")
        for f in fetched:
            expected = entry.sha256.get(f.name) or f.expected_sha256
            if expected and expected.lower() != f.sha256:
                f.path.unlink(missing_ok=True)  # never keep a file that failed its hash where it could be used
                raise IntegrityError(
                    f"{f.name} from {source} failed its sha256 check (expected {expected[:12]}…, got {f.sha256[:12]}…); "
                    "nothing was installed",
                    hint="the download was corrupted or the file was changed; run the command again or use another source",
                )
        ctx.meter.start(entry.main_file, "verify", None)
        check_gguf_files([by_name[n].path for n in entry.files])
        final_dir = self.registry.model_dir(entry.id)
        final_dir.mkdir(parents=True, exist_ok=True)
        for name in entry.files:
            by_name[name].path.replace(final_dir / name)  # atomic: same filesystem
        model = InstalledModel(
            id=entry.id,
            files=[InstalledFile(n, by_name[n].sha256, by_name[n].size) for n in entry.files],
            source=source,
            installed_at=time.time(),
            directory=str(final_dir),
        )
        self.registry.record(model)
        ctx.meter.start(entry.main_file, "done", model.size, model.size)
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
        return model

    def remove(self, model_id: str) -> InstalledModel:
        rec = self.registry.forget(model_id)
        if rec is None:
            raise NotInstalledError(f"'{model_id}' is not installed", hint="`localchat list` shows what is")
        folder = Path(rec.directory)
        for f in rec.files:
            (folder / f.name).unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        shutil.rmtree(self.downloads_dir / model_id, ignore_errors=True)
        return rec

    def partial_bytes(self, model_id: str | None = None) -> int:
        """Bytes held by unfinished downloads (of one model, or of all): what `pull` would resume from."""
        folder = self.downloads_dir / model_id if model_id else self.downloads_dir
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

    def discard_partial(self, model_id: str) -> int:
        """Delete an unfinished download of a model that is not installed; returns the bytes freed."""
        freed = self.partial_bytes(model_id)
        shutil.rmtree(self.downloads_dir / model_id, ignore_errors=True)
        return freed

    def verify(self, model_id: str, progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> VerifyReport:
        """Re-hash an installed model's files offline against what was recorded at install."""
        rec = self.registry.get(model_id)
        if rec is None:
            raise NotInstalledError(f"'{model_id}' is not installed", hint=f"run `localchat pull {model_id}`")
        meter = ProgressMeter(progress, model_id, "local")
        problems = []
        for f in rec.files:
            path = Path(rec.directory) / f.name
            if not path.is_file():
                problems.append(f"{f.name} is missing")
                continue
            size = path.stat().st_size
            if size != f.size:
                problems.append(f"{f.name} has {size} bytes, {f.size} were installed")
                continue
            meter.start(f.name, "verify", f.size)
            digest = sha256_file(path, lambda done: meter.update(f.name, "verify", done, f.size), cancel)
            if digest != f.sha256:
                problems.append(f"{f.name} changed since install (sha256 {digest[:12]}…, recorded {f.sha256[:12]}…)")
        return VerifyReport(model_id, not problems, problems)


def check_gguf_files(paths: list[Path]) -> None:
    """Refuse a file that is not a well-formed GGUF before it is installed (and before llama.cpp sees it)."""
    from localchat import gguf

    try:
        if len(paths) > 1:
            gguf.check_split(paths)
        else:
            gguf.read_gguf(paths[0])
    except GGUFError:
        for p in paths:
            p.unlink(missing_ok=True)
        raise
