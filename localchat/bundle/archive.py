"""The tar side of a bundle: writing members straight from model files, and reading without trusting."""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from localchat.bundle.manifest import MANIFEST, MAX_MANIFEST, BundleFile, BundleManifest, BundleModel, parse_manifest
from localchat.errors import BundleError, IntegrityError
from localchat.sources.base import COPY_BUFFER, CancelToken, FetchedFile, HashingWriter, ProgressMeter

BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the archive to whole records


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, int(time.time()), tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")  # pax: sizes past 8 GiB stay exact


def write_member(out: BinaryIO, name: str, data: bytes) -> None:
    out.write(_header(name, len(data)))
    out.write(data)
    out.write(bytes(-len(data) % BLOCK))


def stream_file(out: BinaryIO, src: Path, f: BundleFile, meter: ProgressMeter, cancel: CancelToken) -> None:
    """Copy one model file into the tar, hashing the very bytes written; they must match the manifest."""
    out.write(_header(f.member, f.size))
    h = hashlib.sha256()
    buf = memoryview(bytearray(COPY_BUFFER))
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


def write_end(out: BinaryIO) -> None:
    """End of archive (two zero blocks), then padding to a whole record as tar does."""
    out.write(bytes(BLOCK * 2))
    out.write(bytes(-out.tell() % RECORD))


class BundleReader:
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

    def __enter__(self) -> "BundleReader":
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
