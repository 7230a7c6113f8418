"""Engine fixtures: clients on the tiny models, closed after each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from localchat.engine import EngineClient
from localchat.types import LoadOptions


@pytest.fixture
def log_dir(tmp_path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def start(log_dir):
    """start(model_path, **load_options) -> a running EngineClient, closed at the end of the test."""
    clients: list[EngineClient] = []

    def _start(model_path: Path, **options) -> EngineClient:
        client = EngineClient.start(model_path, LoadOptions(**{"n_ctx": 2048, **options}), log_dir)
        clients.append(client)
        return client

    yield _start
    for client in clients:
        client.close()


@pytest.fixture
def tiny(start, tiny_model) -> EngineClient:
    return start(tiny_model)


@pytest.fixture
def looping(start, tiny_loop_model) -> EngineClient:
    return start(tiny_loop_model)
