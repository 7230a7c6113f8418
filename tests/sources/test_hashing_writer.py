"""The one HashingWriter: local copies, network chunks on its thread, a continued partial file, /dev/null."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from localchat.sources.base import CancelToken, FetchContext, HashingWriter, ProgressMeter, WriteFailed


def _ctx(tmp_path: Path) -> FetchContext:
    return FetchContext("m", tmp_path, ProgressMeter(None, "m"), CancelToken())


def test_continues_a_partial_file_with_its_hasher(tmp_path):
    part = tmp_path / "m.gguf.part"
    part.write_bytes(b"abc" + b"junk after the hashed prefix")
    hasher = hashlib.sha256(b"abc")
    writer = HashingWriter(part, "m.gguf", 9, _ctx(tmp_path), offset=3, hasher=hasher)
    for chunk in (b"def", b"ghi"):
        writer.put(chunk)
    fetched = writer.finish()
    assert part.read_bytes() == b"abcdefghi"
    assert fetched.sha256 == hashlib.sha256(b"abcdefghi").hexdigest() and fetched.size == 9


def test_copy_replaces_the_file_and_verify_writes_to_dev_null(tmp_path):
    dest = tmp_path / "copy.gguf"
    dest.write_bytes(b"older and longer content")
    data = os.urandom(700_000)
    with HashingWriter(dest, "copy.gguf", len(data), _ctx(tmp_path), phase="copy") as writer:
        assert writer.copy_from(io.BytesIO(data), limit=500_000) == 500_000
        writer.copy_from(io.BytesIO(data[500_000:]))
        fetched = writer.finish()
    assert dest.read_bytes() == data and fetched.sha256 == hashlib.sha256(data).hexdigest()
    with HashingWriter(Path(os.devnull), "copy.gguf", len(data), _ctx(tmp_path), phase="verify") as sink:
        sink.copy_from(io.BytesIO(data))
        assert sink.finish().sha256 == fetched.sha256


def test_a_disk_error_keeps_a_hashed_prefix(tmp_path):
    part = tmp_path / "m.gguf.part"
    budget = [5]

    def filling_disk(fd: int, data: memoryview) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = os.write(fd, data[: budget[0]])
        budget[0] -= n
        return n

    writer = HashingWriter(part, "m.gguf", None, _ctx(tmp_path), write=filling_disk)
    writer.put(b"0123456789")
    assert writer.close() == 5
    assert isinstance(writer.error, OSError) and writer.error.errno == errno.ENOSPC
    with pytest.raises(WriteFailed):
        writer.put(b"more")
    assert part.read_bytes() == b"01234"
