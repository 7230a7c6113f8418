"""`localchat serve` started by the test on a free loopback port, with models registered in the test home."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT = 120.0  # generous: the CI machine has 2 cores and loads a model first


@dataclass
class Server:
    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    log: Path
    home: Path
    key: str | None = None  # sent to /health when the server requires one

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def health(self) -> dict:
        import requests

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return requests.get(self.url + "/health", headers=headers, timeout=30).json()

    def wait_health(self, predicate, timeout: float = 60.0) -> dict:
        """Poll /health until predicate(health) holds (a safeguard against hanging, not a timing check)."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if predicate(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"/health never reached the expected state: {health}")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(home: Path, *args: str, env: dict | None = None) -> Server:
    log = home.parent / f"serve-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would block the server's logging
        proc = subprocess.Popen([sys.executable, "-m", "localchat", "--home", str(home), "serve", "--port", "0", *args],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        found = re.search(r"localchat: serving .*on (http://127\.0\.0\.1:\d+)/v1", text)
        if found:
            return Server(proc, found.group(1), log, home)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"localchat serve did not start (exit {proc.returncode}):\n{text}")
        time.sleep(0.05)


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


def long_context(home: Path, model_id: str, n_ctx: int = 32768) -> None:
    """Load `model_id` with a large window (config.yaml), so a looping reply runs for many thousand tokens."""
    from localchat.paths import Paths

    cfg = Paths.from_env(home).ensure().config_file
    with open(cfg, "a", encoding="utf-8") as f:
        f.write(f"models:\n  {model_id}:\n    load:\n      n_ctx: {n_ctx}\n")
