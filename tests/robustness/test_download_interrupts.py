"""`localchat pull` stopped by Ctrl-C (SIGINT) or kill -9 part-way, then run again as a user would: the
second pull continues where the first stopped (the local hub counts every byte it sends) and a partial
file that was damaged while nobody watched is never installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.sources import (
    REPO,
    assert_installed,
    fast_retries,  # noqa: F401 - autouse here, as in tests/sources
    range_start,
)


def pull(home, model_id: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localchat", "--home", str(home), "pull", model_id],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())


def start_and_stop(svc, home, name: str, sig: signal.Signals) -> tuple[subprocess.Popen, int, str]:
    """Start `localchat pull big`, stop it with `sig` once 1 MB is on disk; (process, bytes kept, stderr)."""
    svc.paths.user_catalog.write_text(f"- id: big\n  files: [{name}]\n  sources:\n    - hf: {REPO}\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "localchat", "--home", str(home), "pull", "big"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(), text=True)
    part = svc.paths.downloads_dir / "big" / (name + ".part")
    try:
        while not (part.exists() and part.stat().st_size >= 1_000_000):
            assert proc.poll() is None, "the pull ended before it could be stopped: " + proc.stderr.read()
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, part.stat().st_size, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_stopped_pull_resumes_without_fetching_finished_bytes(hub, svc, model_files, localchat_home, sig):
    name, size = model_files.big.name, model_files.big.stat().st_size
    hub.add_fault(name, rate=2_000_000)
    proc, kept, err = start_and_stop(svc, localchat_home, name, sig)
    assert 1_000_000 <= kept < size
    if sig == signal.SIGINT:
        assert proc.returncode == 128 + signal.SIGINT
        assert err.strip().splitlines()[-1] == "localchat: interrupted" and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert svc.registry.get("big") is None  # nothing half-installed
    sent_before = hub.bytes_sent(name)

    hub.clear_faults()
    again = pull(localchat_home, "big")
    assert again.returncode == 0, again.stderr
    assert_installed(svc, "big", [model_files.big])
    resumed = hub.body_requests(name)[-1]
    assert range_start(resumed) == kept and resumed.status == 206
    assert resumed.sent == size - kept
    # the bytes on disk when it stopped were not fetched again (what was in flight may have been)
    assert hub.bytes_sent(name) - sent_before == size - kept


def test_a_partial_file_damaged_after_a_kill_is_never_installed(hub, svc, model_files, localchat_home):
    name = model_files.big.name
    hub.add_fault(name, rate=2_000_000)
    _, kept, _ = start_and_stop(svc, localchat_home, name, signal.SIGKILL)
    part = svc.paths.downloads_dir / "big" / (name + ".part")
    with open(part, "r+b") as f:  # a torn write / bad sector in what was already downloaded
        f.seek(kept // 2)
        byte = f.read(1)
        f.seek(kept // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    hub.clear_faults()
    damaged = pull(localchat_home, "big")
    assert damaged.returncode == 1
    lines = damaged.stderr.strip().splitlines()
    assert lines[-1].startswith("localchat: error: ") and "sha256" in lines[-1], damaged.stderr
    assert svc.registry.get("big") is None
    assert not (svc.paths.models_dir / "big").exists() or not any((svc.paths.models_dir / "big").iterdir())

    fixed = pull(localchat_home, "big")  # the damaged part was discarded: this one starts over and installs
    assert fixed.returncode == 0, fixed.stderr
    assert_installed(svc, "big", [model_files.big])
    assert range_start(hub.body_requests(name)[-1]) == 0
