"""Whether llama.cpp may put weights in AMX buffers on this machine: a self-test, run once per llama.cpp build.

On CPUs with Intel AMX (Sapphire Rapids and later) llama.cpp repacks quantized weights into AMX buffers:
one-token decodes then run its AVX512-VNNI kernel, prompts its AMX tile kernel. That roughly doubles
decode speed on a Q4 model. But a llama.cpp compiled with GCC 12 (Debian 12's compiler, so a plain
`pip install llama-cpp-python` there) drops the stores that fill the tile configuration, and the first
prompt of more than one token dies with SIGSEGV (ggml-org/llama.cpp#20824; scripts/_venv.sh builds with
scripts/build/gcc-amx-fix.h, which corrects GCC's intrinsics).

So before a worker loads a model, `decide()` asks a throwaway process (`localchat.engine.worker --amx-selftest`,
which runs `llama.selftest.amx_selftest`) to multiply a Q4_0 matrix held in an AMX buffer by a 32-row batch through ggml's CPU backend, and to
compare the result with the same product from an ordinary buffer. AMX buffers are used only when that
process exits cleanly with matching numbers. The answer is kept in `engine-selftest.json` (next to the
engine logs), keyed by the llama.cpp library files and the CPU, so it costs one process start per build.

LOCALCHAT_AMX=1 or 0 decides without the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from localchat.fsutil import atomic_write_text

ENV = "LOCALCHAT_AMX"
ENV_NOTE = "LOCALCHAT_AMX_NOTE"
CACHE_NAME = "engine-selftest.json"
TIMEOUT_S = 120.0


@dataclass(frozen=True)
class AmxDecision:
    use: bool
    note: str | None  # why AMX is off where it could be on (shown with the model's notes), else None
    reason: str = ""  # one line for `localchat doctor`, whatever the answer


_memo: dict[str, AmxDecision] = {}


def decide(cache_dir: Path | None) -> AmxDecision:
    """Use AMX weight buffers? LOCALCHAT_AMX decides if set; otherwise the (cached) self-test does."""
    forced = os.environ.get(ENV)
    if forced == "1":
        return AmxDecision(True, None, "on (LOCALCHAT_AMX=1)")
    if forced == "0":
        note = os.environ.get(ENV_NOTE) or "AMX weight buffers off (LOCALCHAT_AMX=0)"
        return AmxDecision(False, note, note)
    key = build_key()
    if key is None:  # llama_cpp is not installed: the worker will say so itself
        return AmxDecision(False, None, "unknown (llama-cpp-python is not installed)")
    if key in _memo:
        return _memo[key]
    cache = Path(cache_dir) / CACHE_NAME if cache_dir else None
    entry = _read_cache(cache).get(key)
    if entry is None:
        entry = run_selftest()
        if entry.get("final"):
            _write_cache(cache, key, entry)
    decision = _decision(entry)
    _memo[key] = decision
    return decision


def worker_env(env: dict[str, str], cache_dir: Path | None) -> dict[str, str]:
    """The decision, handed to a worker through its environment (so the worker never runs the test)."""
    if env.get(ENV) in ("0", "1"):
        return env
    d = decide(cache_dir)
    env[ENV] = "1" if d.use else "0"
    if d.note:
        env[ENV_NOTE] = d.note
    return env


def _decision(entry: dict) -> AmxDecision:
    if not entry.get("present"):  # nothing to decide
        return AmxDecision(False, None, "not available (this CPU or this llama.cpp build has no AMX)")
    if entry.get("ok"):
        return AmxDecision(True, None, "on: quantized weights in AMX buffers (the self-test passed for this llama.cpp build)")
    note = (f"AMX weight buffers off: {entry.get('why') or 'the AMX self-test failed'} (llama.cpp#20824; "
            "rebuild llama-cpp-python as scripts/_venv.sh does, or LOCALCHAT_AMX=1 to force them on)")
    return AmxDecision(False, note, note)


def build_key() -> str | None:
    """Identifies the llama.cpp build and the CPU: the shared libraries' names, sizes and times, and the
    CPU model and flags. Found without importing llama_cpp."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    pkg = Path(spec.origin).parent
    h = hashlib.sha256()
    for lib in sorted(p for d in (pkg / "lib", pkg) if d.is_dir() for p in d.iterdir() if ".so" in p.name or p.suffix in (".dylib", ".dll")):
        st = lib.stat()
        h.update(f"{lib}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(_cpu_identity().encode())
    return h.hexdigest()[:32]


def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name in ("model name", "flags") and name not in fields:
            fields[name] = value.strip()
        if len(fields) == 2:
            break
    return f"{fields.get('model name', '')}|{fields.get('flags', '')}"


def run_selftest(argv: list[str] | None = None, timeout: float = TIMEOUT_S) -> dict:
    """Runs the test in a child process. Returns {"present", "ok", "why", "final"}; "final" is False when
    the answer should not be kept (the child could not start or ran out of time)."""
    cmd = argv or [sys.executable, "-m", "localchat.engine.worker", "--amx-selftest"]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    try:
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"present": True, "ok": False, "why": f"the AMX self-test did not finish in {timeout:.0f} s", "final": False}
    except OSError as e:
        return {"present": True, "ok": False, "why": f"the AMX self-test could not start ({e})", "final": False}
    if done.returncode < 0:
        import signal

        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return {"present": True, "ok": False, "final": True,
                "why": f"this llama.cpp build's AMX kernels crash ({name} in the self-test)"}
    try:
        result = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        return {"present": True, "ok": False, "final": done.returncode == 0,
                "why": f"the AMX self-test failed (exit {done.returncode}: {tail[0][:200]})"}
    return {"present": bool(result.get("present")), "ok": bool(result.get("ok")), "final": True,
            "why": str(result.get("why", ""))}


def _read_cache(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path | None, key: str, entry: dict) -> None:
    if path is None:
        return
    data = _read_cache(path)
    data[key] = {k: entry[k] for k in ("present", "ok", "why") if k in entry}
    try:
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    except OSError:
        pass  # a read-only home: the test simply runs again next time
