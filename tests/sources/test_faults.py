"""What goes wrong on the way: corrupted bytes, a hub that answers 503, a slow link, a disk that fills up."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from localchat import fsutil
from localchat.errors import Cancelled, DiskFullError, IntegrityError, SourceError
from localchat.sources import CancelToken, http
from tests.support.sources import REPO, Progress, assert_installed, entry, range_start


@pytest.mark.parametrize("kind", ["hf", "modelscope"])
def test_a_corrupted_download_is_refused_and_nothing_usable_is_left(hub, svc, model_files, kind):
    name = model_files.big.name
    hub.add_fault(name, corrupt_at=3_000_000)
    e = entry("m", [model_files.big], (kind, REPO))
    with pytest.raises(IntegrityError) as err:
        svc.installer.install(e)
    assert "failed its sha256 check" in str(err.value) and "nothing was installed" in str(err.value)
    assert svc.registry.get("m") is None
    assert not (svc.paths.models_dir / "m" / name).exists()
    assert not (svc.paths.downloads_dir / "m" / (name + ".part")).exists()  # not resumable either: it is wrong

    svc.installer.install(e)  # the next try fetches a good copy from byte 0
    assert_installed(svc, "m", [model_files.big])
    assert range_start(hub.body_requests(name)[-1]) == 0


def test_a_url_download_that_does_not_match_the_catalog_sha256_is_refused(hub, svc, model_files):
    url = hub.file_url(REPO, model_files.small.name)
    e = entry("m", [model_files.small], ("url", url), sha256={model_files.small.name: "ab" * 32})
    with pytest.raises(IntegrityError):
        svc.installer.install(e)
    assert svc.registry.get("m") is None


def test_503s_are_retried_with_growing_back_off(hub, svc, model_files):
    name = model_files.small.name
    hub.add_fault(name, status=503, times=3)
    svc.installer.install(entry("m", [model_files.small], ("hf", REPO)))
    assert_installed(svc, "m", [model_files.small])
    bodies = hub.body_requests(name)
    assert [r.status for r in bodies] == [503, 503, 503, 200]
    gaps = [b.at - a.at for a, b in zip(bodies, bodies[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # the fixture's policy: 0.05 s, doubling


def test_503s_that_do_not_stop_are_reported_after_bounded_attempts(hub, svc, model_files):
    name = model_files.small.name
    hub.add_fault(name, status=503, times=-1, retry_after=0)
    with pytest.raises(SourceError) as err:
        svc.installer.install(entry("m", [model_files.small], ("hf", REPO)))
    text = str(err.value)
    assert "HTTP 503" in text and "after 4 attempts" in text and "run the same command again" in text
    assert len(hub.body_requests(name)) == http.DEFAULT_POLICY.attempts
    assert svc.registry.get("m") is None


def test_a_slow_link_shows_speed_and_eta_and_cancel_keeps_the_bytes(hub, svc, model_files):
    name, size = model_files.big.name, model_files.big.stat().st_size
    rate = 1_000_000
    hub.add_fault(name, rate=rate)
    cancel = CancelToken()
    progress = Progress(cancel, cancel_after=600_000)
    with pytest.raises(Cancelled):
        svc.installer.install(entry("m", [model_files.big], ("hf", REPO)), progress=progress, cancel=cancel)
    moving = [p for p in progress.reports if p.phase == "download" and p.speed > 0]
    assert moving, "no progress report carried a speed"
    last = moving[-1]
    assert rate / 4 < last.speed < rate * 4  # the link's pace, not a burst from a buffer
    assert last.total == size and last.eta is not None and last.eta > 1
    kept = (svc.paths.downloads_dir / "m" / (name + ".part")).stat().st_size
    assert 600_000 <= kept < size


def test_a_full_disk_mid_download_fails_cleanly_and_the_next_pull_resumes(hub, svc, model_files, monkeypatch):
    name, size = model_files.big.name, model_files.big.stat().st_size
    room = {"left": 2_500_000}
    real_write = http.write_chunk

    def filling_disk(fd, data):
        if room["left"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, data[: room["left"]])
        room["left"] -= n
        return n

    monkeypatch.setattr(http, "write_chunk", filling_disk)
    e = entry("m", [model_files.big], ("hf", REPO))
    with pytest.raises(DiskFullError) as err:
        svc.installer.install(e)
    assert "2,500,000 bytes are kept for resuming" in str(err.value) and "free some space" in str(err.value)
    assert svc.registry.get("m") is None
    part = svc.paths.downloads_dir / "m" / (name + ".part")
    assert part.stat().st_size == 2_500_000
    assert part.read_bytes() == model_files.big.read_bytes()[:2_500_000]  # a correct prefix, nothing more

    monkeypatch.setattr(http, "write_chunk", real_write)  # space was freed
    svc.installer.install(e)
    assert_installed(svc, "m", [model_files.big])
    resumed = hub.body_requests(name)[-1]
    assert range_start(resumed) == 2_500_000 and resumed.sent == size - 2_500_000


def test_not_enough_free_space_is_refused_before_downloading(hub, svc, model_files, monkeypatch):
    monkeypatch.setattr(fsutil, "disk_free", lambda path: 1_000_000)
    with pytest.raises(DiskFullError, match="not enough disk space"):
        svc.installer.install(entry("m", [model_files.big], ("hf", REPO)))
    assert hub.bytes_sent() == 0


@pytest.fixture
def tiny_disk(tmp_path, monkeypatch):
    """A real 24 MB tmpfs as the data directory (needs root; skipped elsewhere)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk(hub, model_files, tiny_disk, monkeypatch):
    from localchat.services import Services

    svc = Services.open(tiny_disk / "home")
    name, size = model_files.big.name, model_files.big.stat().st_size
    hub.add_fault(name, rate=4_000_000)
    filler = tiny_disk / "filler"

    def fill_the_disk(p):  # something else takes all the space while the download runs
        if p.phase == "download" and p.done > 1_000_000 and not filler.exists():
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 20))
                        f.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

    e = entry("m", [model_files.big], ("hf", REPO))
    with pytest.raises(DiskFullError, match="bytes are kept for resuming"):
        svc.installer.install(e, progress=fill_the_disk)
    part = svc.paths.downloads_dir / "m" / (name + ".part")
    kept = part.stat().st_size
    assert 1_000_000 < kept < size
    assert part.read_bytes() == model_files.big.read_bytes()[:kept]

    filler.unlink()
    hub.clear_faults()
    svc.installer.install(e)
    assert_installed(svc, "m", [model_files.big])
    assert range_start(hub.body_requests(name)[-1]) == kept

