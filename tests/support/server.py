"""`localchat serve` started on a free loopback port; catalog entries for models and remote endpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def long_context(home: Path, model_id: str, n_ctx: int = 32768) -> None:
    """Load `model_id` with a large window (config.yaml), so a looping reply runs for many thousand tokens."""
    from localchat.paths import Paths

    cfg = Paths.from_env(home).ensure().config_file
    with open(cfg, "a", encoding="utf-8") as f:
        f.write(f"models:\n  {model_id}:\n    load:\n      n_ctx: {n_ctx}\n")


def add_remote(home: Path, model_id: str, endpoint: str, remote_model: str | None = None, key_env: str | None = None,
               context: int | None = None):
    """Add a remote catalog entry for `endpoint`; returns a fresh Services that sees it."""
    from localchat.services import Services

    svc = Services.open(home)
    lines = [f"- id: {model_id}", f"  endpoint: {endpoint}"]
    if remote_model:
        lines.append(f"  remote_model: {remote_model}")
    if key_env:
        lines.append(f"  api_key_env: {key_env}")
    if context:
        lines.append(f"  context: {context}")
    with open(svc.paths.user_catalog, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return Services.open(home)


def serve_tiny(tmp_path_factory, model: Path, **register) -> Iterator[Server]:
    """A test module's one server, on `model` registered as "tiny" (a server costs a model load: the module's
    tests share it and only read from it). For a module-scoped fixture: `yield from serve_tiny(...)`."""
    from tests.support.models import register_local_model

    home = tmp_path_factory.mktemp("serve") / "home"
    register_local_model(home, model, "tiny", **register)
    server = start_server(home, "--model", "tiny")
    try:
        yield server
    finally:
        server.stop()
