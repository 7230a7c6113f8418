"""Files written whole or not at all, and free-space checks with a message a user can act on (stdlib only)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from localchat.errors import DiskFullError
from localchat.units import human_size


@contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only when the block ends without error: readers see the old or
    the new content, never half of it. The temporary file sits in the same folder (same filesystem) and is
    fsynced before the rename; on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def disk_free(path: Path) -> int:
    """Bytes free for this user on the filesystem that holds `path` (or would, once created)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def require_free_space(path: Path, need: int, action: str,
                       hint: str = "free some space (`localchat rm ID` removes a model) and try again") -> None:
    """Raise DiskFullError, before anything is written, when `need` bytes do not fit at `path`."""
    free = disk_free(path)
    if need > free:
        raise DiskFullError(f"not enough disk space {action}: it needs {human_size(need)}, "
                            f"{human_size(free)} free at {path}", hint=hint)
