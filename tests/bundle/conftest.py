"""Fixtures for bundle tests: two tiny generated models installed in a source home, an empty target home."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two small, different, well-formed GGUF files (a few MB each)."""
    from tests.support.ggufgen import make_tiny_gguf

    folder = tmp_path_factory.mktemp("bundle-models")
    return make_tiny_gguf(folder / "tiny-a.gguf", reply="Hi!"), make_tiny_gguf(folder / "tiny-b.gguf", reply="Yo?")


@pytest.fixture
def source_home(tmp_path, tiny_pair) -> Path:
    """A LOCALCHAT_HOME with tiny-a and tiny-b installed (from copies this test may damage)."""
    from tests.support.models import register_local_model

    home = tmp_path / "source-home"
    folder = tmp_path / "source-files"
    folder.mkdir()
    for path in tiny_pair:
        copy = Path(shutil.copy(path, folder / path.name))
        register_local_model(home, copy, model_id=path.stem, template="chatml", context=2048)
    return home


@pytest.fixture
def target_home(tmp_path) -> Path:
    return tmp_path / "target-home"
