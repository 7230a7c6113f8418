"""`localchat serve` started by the test on a free loopback port, with models registered in the test home."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.server import Server, start_server


@pytest.fixture
def serve(localchat_home):
    """serve(*args, env=None) -> Server; every server started is stopped after the test."""
    started: list[Server] = []

    def _serve(*args: str, env: dict | None = None, key: str | None = None) -> Server:
        server = start_server(localchat_home, *args, env=env)
        server.key = key
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def slow_loop_model(tmp_path_factory) -> Path:
    """A tiny model that never stops and has a 32k window: a reply runs long enough to be cut mid-way."""
    from tests.support.ggufgen import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-long.gguf", reply="abcdefgh ", loop=True,
                          n_ctx_train=32768)
