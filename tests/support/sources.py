"""A local hub serving generated GGUFs (tests/support/hubserver.py) for the model source tests: its
fixtures (used by tests/sources and the pull-interrupt tests), in-memory catalog entries, progress
recording and the checks on what got installed."""


from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ggufgen import make_tiny_gguf
from tests.support.hubserver import HubServer

REPO = "acme/Tiny-Chat-GGUF"
SPLIT_REPO = "acme/Tiny-Split-GGUF"
GATED_REPO = "acme/Tiny-Gated-GGUF"


@dataclass
class ModelFiles:
    small: Path  # ~0.5 MB
    big: Path  # ~6 MB, for resume and slow-link tests
    split: list[Path]  # three parts of one model

    @staticmethod
    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> ModelFiles:
    d = tmp_path_factory.mktemp("hubfiles")
    small = make_tiny_gguf(d / "tiny-chat-q4_k_m.gguf", reply="Hi!", n_embd=64)
    big = make_tiny_gguf(d / "tiny-chat-f32.gguf", reply="Hi!", n_embd=256)
    (d / "split").mkdir()
    first = make_tiny_gguf(d / "split" / "tiny-split-q8_0.gguf", reply="Hi!", n_embd=64, split_max_tensors=8)
    return ModelFiles(small, big, sorted(first.parent.glob("tiny-split-q8_0-*-of-*.gguf")))


@pytest.fixture
def hub(model_files, monkeypatch, tmp_path):
    with HubServer() as server:
        server.add_repo(REPO, [model_files.small, model_files.big])
        server.add_repo(SPLIT_REPO, model_files.split)
        server.add_repo(GATED_REPO, [model_files.small], gated=True)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
        # The ModelScope client must not find a login saved on this machine (read per HubConfig).
        monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
        monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
        yield server


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    """Real back-off, scaled down: tests stay fast and still see the delays grow."""
    from localchat.sources import http

    policy = http.RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.4, timeout=10)
    monkeypatch.setattr(http, "DEFAULT_POLICY", policy)


@pytest.fixture
def svc(localchat_home):
    from localchat.services import Services

    return Services.open(localchat_home)


def entry(model_id: str, files, *sources, sha256: dict | None = None):
    """A catalog entry built in memory: sources as ("hf", "OWNER/REPO") pairs."""
    from localchat.catalog import ModelEntry, SourceSpec

    names = tuple(Path(f).name if isinstance(f, Path) else f for f in files)
    return ModelEntry(id=model_id, name=model_id, files=names, sources=tuple(SourceSpec(k, loc) for k, loc in sources),
                      sha256=sha256 or {}, origin="user")


class Progress:
    """Collects progress reports; can cancel once `cancel_after` bytes of a download were reported."""

    def __init__(self, cancel=None, cancel_after: int | None = None) -> None:
        self.reports = []
        self.cancel = cancel
        self.cancel_after = cancel_after

    def __call__(self, p) -> None:
        self.reports.append(p)
        if self.cancel is not None and p.phase == "download" and p.done >= (self.cancel_after or 0) > 0:
            self.cancel.cancel()

    def phases(self) -> list[str]:
        return [p.phase for p in self.reports]


def range_start(record) -> int:
    m = re.match(r"bytes=(\d+)-", record.headers.get("range", ""))
    return int(m.group(1)) if m else 0


def assert_installed(svc, model_id: str, files: list[Path]) -> None:
    rec = svc.registry.get(model_id)
    assert rec is not None and svc.registry.is_installed(model_id)
    assert [f.name for f in rec.files] == [p.name for p in files]
    for f, src in zip(rec.files, files):
        installed = Path(rec.directory) / f.name
        assert installed.read_bytes() == src.read_bytes()
        assert f.sha256 == ModelFiles.sha(src) and f.size == src.stat().st_size
    assert not (svc.paths.downloads_dir / model_id).exists()  # no partial files left behind
