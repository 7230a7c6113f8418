"""Imported at start-up by every Python process a test starts (tests/conftest.py puts this folder on
PYTHONPATH): while a fast-layer test runs, an engine worker that is about to load a model writes its
command line to $LOCALCHAT_TEST_WORKER_LOG, and that test fails (tests/conftest.py model_guard)."""

import os
import sys

_log = os.environ.get("LOCALCHAT_TEST_WORKER_LOG")
_argv = list(getattr(sys, "orig_argv", []))
# A worker that loads a model runs with no options; --build-info and --amx-selftest load none.
if _log and _argv[-2:] == ["-m", "localchat.engine.worker"]:
    with open(_log, "a", encoding="utf-8") as _f:
        _f.write(" ".join(_argv) + "\n")
