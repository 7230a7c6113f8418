"""The AMX self-test decides whether llama.cpp may keep weights in AMX buffers: a build whose AMX kernels
crash (GCC 12, llama.cpp#20824) must be caught in a throwaway process, remembered, and kept off AMX."""

from __future__ import annotations

import json
import sys

import pytest

from localchat.engine import amx


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(amx.ENV, raising=False)
    monkeypatch.delenv(amx.ENV_NOTE, raising=False)
    monkeypatch.setattr(amx, "_memo", {})


REAL_SELFTEST = amx.run_selftest


def crashing_selftest():
    return REAL_SELFTEST([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])


def test_the_real_selftest_passes_with_this_build():
    """scripts/_venv.sh compiles llama.cpp with the intrinsics fix, so where there is AMX it must work."""
    r = amx.run_selftest()
    assert r["final"], r
    assert r["ok"] or not r["present"], r


def test_a_crashing_selftest_turns_amx_off_and_is_remembered(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(amx, "run_selftest", lambda: calls.append(1) or crashing_selftest())
    d = amx.decide(tmp_path)
    assert not d.use
    assert "SIGSEGV" in d.note and "LOCALCHAT_AMX=1" in d.note
    saved = json.loads((tmp_path / amx.CACHE_NAME).read_text())
    assert list(saved.values()) == [{"present": True, "ok": False, "why": saved[amx.build_key()]["why"]}]

    monkeypatch.setattr(amx, "_memo", {})  # a new process: the answer comes from the file, no second test
    assert amx.decide(tmp_path) == d
    assert calls == [1]


def test_wrong_numbers_or_garbage_output_keep_amx_off(tmp_path):
    wrong = amx.run_selftest([sys.executable, "-c", 'print(\'{"present": true, "ok": false, "why": "wrong results"}\')'])
    assert wrong == {"present": True, "ok": False, "why": "wrong results", "final": True}
    garbage = amx.run_selftest([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    assert not garbage["ok"] and "exit 3" in garbage["why"] and "boom" in garbage["why"]


def test_a_selftest_that_hangs_is_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setattr(amx, "run_selftest",
                        lambda: REAL_SELFTEST([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5))
    d = amx.decide(tmp_path)
    assert not d.use and "did not finish" in d.note
    assert not (tmp_path / amx.CACHE_NAME).exists()


def test_the_environment_decides_without_a_selftest(tmp_path, monkeypatch):
    monkeypatch.setattr(amx, "run_selftest", lambda: pytest.fail("no self-test when LOCALCHAT_AMX is set"))
    monkeypatch.setenv(amx.ENV, "1")
    assert amx.decide(tmp_path).use
    monkeypatch.setenv(amx.ENV, "0")
    assert not amx.decide(tmp_path).use
    assert amx.worker_env({amx.ENV: "0"}, tmp_path) == {amx.ENV: "0"}


def test_a_worker_gets_the_answer_through_its_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(amx, "run_selftest", crashing_selftest)
    env = amx.worker_env({}, tmp_path)
    assert env[amx.ENV] == "0" and "SIGSEGV" in env[amx.ENV_NOTE]
    monkeypatch.setenv(amx.ENV, env[amx.ENV])  # what the worker sees
    monkeypatch.setenv(amx.ENV_NOTE, env[amx.ENV_NOTE])
    assert amx.decide(None).note == env[amx.ENV_NOTE]


def test_an_unreadable_cache_is_ignored_and_replaced(tmp_path, monkeypatch):
    (tmp_path / amx.CACHE_NAME).write_text("{not json")
    monkeypatch.setattr(amx, "run_selftest", crashing_selftest)
    assert not amx.decide(tmp_path).use
    assert amx.build_key() in json.loads((tmp_path / amx.CACHE_NAME).read_text())


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")  # like a read-only home: writing fails
    monkeypatch.setattr(amx, "run_selftest", crashing_selftest)
    assert not amx.decide(blocker).use
    assert blocker.read_text() == "a file where the cache folder should be"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]  # no temporary file left behind
