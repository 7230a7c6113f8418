"""file source: a GGUF on a local path (USB stick, shared drive). Hard-linked into place when it is on
the same filesystem as the models directory (instant, no extra space), copied with progress otherwise.

`file: /media/usb/models/model.gguf` names the file; for a split GGUF the other parts are looked up beside
it (or `file:` names the folder that holds the parts).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from localchat.errors import DiskFullError, LocalchatError, SourceError
from localchat.sources.base import FetchContext, FetchedFile, copy_hashing, sha256_file

GGUF_MAGIC = b"GGUF"


class FileSource:
    kind = "file"

    def fetch(self, entry, spec, ctx: FetchContext) -> list[FetchedFile]:
        location = Path(os.path.expanduser(spec.location))
        fetched = []
        for name in entry.files:
            src = source_path(location, name, several=len(entry.files) > 1)
            check_magic(src)
            fetched.append(bring_in(src, name, ctx))
        return fetched


def source_path(location: Path, name: str, several: bool) -> Path:
    if location.is_dir():
        path = location / name
    elif several:
        path = location.parent / name  # the parts lie beside the one named
    else:
        path = location  # the file itself, whatever its name
    if not path.is_file():
        raise SourceError(f"{path} is not there", hint="plug in the drive that holds it, or fix the `file:` source")
    return path


def check_magic(path: Path) -> None:
    """A cheap first check with a clear message; the installer checks the whole structure later."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    if head != GGUF_MAGIC:
        raise SourceError(f"{path} is not a GGUF model file (it does not start with 'GGUF')",
                          hint="localchat runs .gguf files (llama.cpp's format); convert or download one")


def bring_in(src: Path, name: str, ctx: FetchContext) -> FetchedFile:
    dest = ctx.work_dir / (name + ".part")
    dest.unlink(missing_ok=True)
    size = src.stat().st_size
    try:
        os.link(src, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise LocalchatError(f"cannot link {src} into {ctx.work_dir}: {exc.strerror}") from None
    else:  # same filesystem: the same bytes, hashed in place
        ctx.meter.start(name, "verify", size)
        digest = sha256_file(dest, lambda done: ctx.meter.update(name, "verify", done, size), ctx.cancel)
        return FetchedFile(name, dest, digest, size)
    with open(src, "rb") as f:  # another filesystem (a USB stick): copy, hashing as it goes
        try:
            return copy_hashing(f, dest, name, size, ctx, phase="copy")
        except OSError as exc:
            dest.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"the disk filled up while copying {src}",
                                    hint="free some space (`localchat rm ID` removes a model) and try again") from None
            raise
