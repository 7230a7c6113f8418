"""Interrupted downloads continue where they stopped: the hub's byte count shows nothing is fetched twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from localchat.errors import Cancelled, SourceError
from localchat.sources import CancelToken
from tests.support.sources import REPO, SPLIT_REPO, ModelFiles, Progress, assert_installed, entry, range_start


@pytest.mark.parametrize("kind", ["hf", "modelscope"])
def test_a_dropped_connection_is_resumed_in_the_same_run(hub, svc, model_files, kind):
    name, size = model_files.big.name, model_files.big.stat().st_size
    hub.add_fault(name, drop_after=1_000_000)
    hub.add_fault(name, drop_after=2_000_000)
    svc.installer.install(entry("m", [model_files.big], (kind, REPO)))
    assert_installed(svc, "m", [model_files.big])
    bodies = hub.body_requests(name)
    assert [range_start(r) for r in bodies] == [0, 1_000_000, 3_000_000]
    assert hub.bytes_sent(name) == size  # every byte crossed the wire exactly once


def test_a_cancelled_download_resumes_without_fetching_finished_bytes(hub, svc, model_files):
    name, size = model_files.big.name, model_files.big.stat().st_size
    hub.add_fault(name, rate=4_000_000)  # slow enough to cancel part-way
    cancel = CancelToken()
    e = entry("m", [model_files.big], ("hf", REPO))
    with pytest.raises(Cancelled):
        svc.installer.install(e, progress=Progress(cancel, cancel_after=1_000_000), cancel=cancel)
    part = svc.paths.downloads_dir / "m" / (name + ".part")
    kept = part.stat().st_size
    assert 1_000_000 <= kept < size
    assert svc.registry.get("m") is None

    svc.installer.install(e)
    assert_installed(svc, "m", [model_files.big])
    resumed = hub.body_requests(name)[-1]
    assert range_start(resumed) == kept and resumed.status == 206
    assert resumed.sent == size - kept


def test_kill_9_mid_download_then_pull_again_resumes(hub, svc, model_files, localchat_home, tmp_path):
    name, size = model_files.big.name, model_files.big.stat().st_size
    (svc.paths.user_catalog).write_text(
        f"- id: killed\n  files: [{name}]\n  sources:\n    - hf: {REPO}\n", encoding="utf-8")
    hub.add_fault(name, rate=2_000_000)
    env = {**os.environ, "LOCALCHAT_HOME": str(localchat_home)}
    proc = subprocess.Popen([sys.executable, "-m", "localchat", "pull", "killed"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = svc.paths.downloads_dir / "killed" / (name + ".part")
    try:
        while not (part.exists() and part.stat().st_size >= 1_000_000):
            assert proc.poll() is None, "the pull ended before it could be killed"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = part.stat().st_size
    assert 1_000_000 <= kept < size
    meta = json.loads((part.parent / (name + ".part.json")).read_text())
    assert meta["identity"] == f"sha256:{ModelFiles.sha(model_files.big)}"

    hub.clear_faults()
    svc.installer.install(svc.catalog.get("killed"))
    assert_installed(svc, "killed", [model_files.big])
    resumed = hub.body_requests(name)[-1]
    assert range_start(resumed) == kept and resumed.sent == size - kept


def test_a_partial_file_of_another_file_is_not_continued(hub, svc, model_files):
    name = model_files.big.name
    work = svc.paths.downloads_dir / "m"
    work.mkdir(parents=True)
    (work / (name + ".part")).write_bytes(b"GGUF" + b"\x00" * 100_000)
    (work / (name + ".part.json")).write_text(json.dumps({"identity": "sha256:" + "0" * 64, "size": None}))
    svc.installer.install(entry("m", [model_files.big], ("hf", REPO)))
    assert_installed(svc, "m", [model_files.big])
    assert [range_start(r) for r in hub.body_requests(name)] == [0]


def test_a_finished_partial_file_needs_no_download(hub, svc, model_files):
    """Killed after the last byte but before the install: the next pull only verifies and installs."""
    work = svc.paths.downloads_dir / "split"
    work.mkdir(parents=True)
    for part in model_files.split:
        (work / (part.name + ".part")).write_bytes(part.read_bytes())
        (work / (part.name + ".part.json")).write_text(json.dumps(
            {"identity": f"sha256:{ModelFiles.sha(part)}", "size": part.stat().st_size}))
    svc.installer.install(entry("split", model_files.split, ("hf", SPLIT_REPO)))
    assert_installed(svc, "split", model_files.split)
    assert len(hub.requests(method="HEAD")) == 3  # resolved again...
    assert hub.bytes_sent() == 0  # ...but no byte of content fetched


def test_a_url_file_that_changed_on_the_server_starts_over(hub, svc, model_files, tmp_path):
    """If-Range carries the ETag of the partial file's origin: a changed file is sent whole, not spliced."""
    name = model_files.big.name
    url = hub.file_url(REPO, name)
    hub.add_fault(name, drop_after=1_000_000)
    e = entry("m", [name], ("url", url))
    hub.add_fault(name, status=404, times=-1)  # the server loses the file while we wait to retry
    with pytest.raises(SourceError, match="HTTP 404"):
        svc.installer.install(e)
    part = svc.paths.downloads_dir / "m" / (name + ".part")
    assert part.stat().st_size == 1_000_000
    # The file is replaced on the server by different content of the same name.
    new = tmp_path / name
    new.write_bytes(model_files.small.read_bytes())
    hub.clear_faults()
    hub.add_repo(REPO, [new, model_files.small])
    svc.installer.install(e)
    assert_installed(svc, "m", [new])
    last = hub.body_requests(name)[-1]
    assert last.headers["if-range"] == f'"{ModelFiles.sha(model_files.big)}"'
    assert last.status == 200 and last.sent == new.stat().st_size



def test_list_shows_unfinished_downloads_and_rm_deletes_them(hub, svc, model_files, capsys):
    from localchat.cli import main

    name = model_files.big.name
    svc.paths.user_catalog.write_text(f"- id: half\n  files: [{name}]\n  sources:\n    - hf: {REPO}\n")
    hub.add_fault(name, drop_after=1_500_000)
    hub.add_fault(name, status=404, times=-1)
    assert main(["pull", "half"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert main(["list"]) == 0
    assert "1.5 MB in unfinished downloads" in capsys.readouterr().out
    assert main(["rm", "half"]) == 0
    assert "removed the unfinished download of half, freed 1.5 MB" in capsys.readouterr().out
    assert not (svc.paths.downloads_dir / "half").exists()
    assert main(["rm", "half"]) == 1
    assert "'half' is not installed" in capsys.readouterr().err
