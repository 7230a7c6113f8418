"""The one module that imports llama_cpp: the library, its logging hook and the backend's start.

It runs inside the worker process only (localchat.engine.worker). llama.cpp's messages go to fd 2 (the
worker's log file) without its DEBUG chatter, and the latest are kept here, because a failed load is only
ever explained there (load_reason). Before the first load, AMX weight buffers are turned off unless the
self-test of localchat.engine.amx passed for this build (avoid_amx).
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from pathlib import Path
from typing import Any

from localchat.engine.llama import ggml

# enum ggml_log_level in ggml.h (llama-cpp-python's _logger.py has an older numbering)
LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CONT = 1, 2, 3, 4, 5

_lib: Any = None  # llama_cpp.llama_cpp once started
# What llama.cpp logged lately, as (level, text) messages: load errors are only ever reported there.
_log: dict[str, Any] = {"recent": deque(maxlen=1000), "count": 0, "level": LOG_INFO, "callback": None, "amx_note": None}


def load() -> Any:
    """llama_cpp.llama_cpp, imported once, its logs sent to stderr and the backend started."""
    global _lib
    if _lib is None:
        lib = raw()
        _install_logger(lib)
        lib.llama_backend_init()
        _lib = lib
        _log["amx_note"] = avoid_amx()
    return _lib


def raw() -> Any:
    """llama_cpp.llama_cpp as imported, no logging hook and no backend start (the AMX self-test wants
    nothing else to have run)."""
    import llama_cpp.llama_cpp as lib

    return lib


def package_version() -> str:
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "unknown"))


def amx_note() -> str | None:
    """Why load() turned AMX weight buffers off, or None."""
    note: str | None = _log["amx_note"]
    return note


def avoid_amx() -> str | None:
    """Keep llama.cpp from putting weights in AMX buffers (CPU repacking stays on) unless AMX is known to
    work with this llama.cpp build; returns a note saying why when it turned them off.

    A llama.cpp compiled by GCC 12 dies with SIGSEGV at `ldtilecfg` on the first prompt of more than one
    token (ggml-org/llama.cpp#20824); `localchat.engine.amx` decides, from a self-test run once per build,
    or from LOCALCHAT_AMX=1/0 (which is how a worker gets the answer its client found). Works by removing
    AMX from the list of extra buffer types the model loader reads (a copy only the loader uses).
    Idempotent; process-wide: call it before loading.
    """
    from localchat.engine import amx

    decision = amx.decide(selftest_cache_dir())
    if decision.use:
        return None
    g = raw()._lib
    bufts, present = ggml.cpu_extra_bufts(g)
    keep = [b for b in present if g.ggml_backend_buft_name(b) != b"AMX"]
    if len(keep) == len(present):
        return None
    for i in range(len(present)):
        bufts[i] = keep[i] if i < len(keep) else None
    return decision.note or "AMX weight buffers off"


def selftest_cache_dir() -> Path | None:
    try:
        from localchat.paths import Paths

        return Paths.from_env().log_dir
    except Exception:  # noqa: BLE001 - no cache: the self-test just runs again
        return None


def _install_logger(lib: Any) -> None:
    """llama.cpp's messages go to fd 2 without its DEBUG chatter, and into _log for error messages."""

    @lib.llama_log_callback
    def on_log(level: int, text: bytes, _user_data: Any) -> None:
        if level == LOG_CONT:
            level = _log["level"]
        _log["level"] = level
        if level == LOG_DEBUG or not text:
            return
        os.write(2, text)
        _log["recent"].append((level, text.decode("utf-8", "replace")))
        _log["count"] += 1

    _log["callback"] = on_log  # keep a reference: llama.cpp holds only the C pointer
    lib.llama_log_set(on_log, ctypes.c_void_p(0))


def log_mark() -> int:
    return _log["count"]


def log_since(mark: int, min_level: int = LOG_INFO) -> list[str]:
    """llama.cpp's log lines since a log_mark() (as far as the last 1000 messages reach)."""
    recent = list(_log["recent"])
    n = min(len(recent), _log["count"] - mark)
    text = "".join(t for level, t in recent[len(recent) - n:] if level >= min_level) if n > 0 else ""
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_reason(mark: int) -> str:
    """The errors llama.cpp logged since `mark`, for a load that failed."""
    errors = log_since(mark, LOG_ERROR)
    return "; ".join(errors[-3:]) if errors else "no reason given in llama.cpp's log"
