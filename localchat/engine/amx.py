"""Whether llama.cpp may put weights in AMX buffers on this machine: a self-test, run once per llama.cpp build.

On CPUs with Intel AMX (Sapphire Rapids and later) llama.cpp repacks quantized weights into AMX buffers:
one-token decodes then run its AVX512-VNNI kernel, prompts its AMX tile kernel. That roughly doubles
decode speed on a Q4 model. But a llama.cpp compiled with GCC 12 (Debian 12's compiler, so a plain
`pip install llama-cpp-python` there) drops the stores that fill the tile configuration, and the first
prompt of more than one token dies with SIGSEGV (ggml-org/llama.cpp#20824; scripts/_venv.sh builds with
scripts/build/gcc-amx-fix.h, which corrects GCC's intrinsics).

So before a worker loads a model, `decide()` asks a throwaway process (`python -m localchat.engine.amx`)
to multiply a Q4_0 matrix held in an AMX buffer by a 32-row batch through ggml's CPU backend, and to
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
    cmd = argv or [sys.executable, "-m", "localchat.engine.amx"]
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only home: the test simply runs again next time


# -- the test itself (the child process) ------------------------------------------------------------

_F32, _Q4_0 = 0, 2
_M, _N, _K = 32, 64, 256  # a 32-row batch takes the AMX tile path (one row would take the VNNI path)


def _selftest() -> dict:
    import ctypes
    import random

    import llama_cpp.llama_cpp as lib

    g = lib._lib
    vp, sz, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64

    class InitParams(ctypes.Structure):
        _fields_ = [("mem_size", sz), ("mem_buffer", vp), ("no_alloc", ctypes.c_bool)]

    sigs = {
        "ggml_backend_dev_by_type": ([ctypes.c_int], vp),
        "ggml_backend_dev_backend_reg": ([vp], vp),
        "ggml_backend_reg_get_proc_address": ([vp, ctypes.c_char_p], vp),
        "ggml_backend_buft_name": ([vp], ctypes.c_char_p),
        "ggml_tensor_overhead": ([], sz),
        "ggml_graph_overhead": ([], sz),
        "ggml_init": ([InitParams], vp),
        "ggml_free": ([vp], None),
        "ggml_new_tensor_2d": ([vp, ctypes.c_int, i64, i64], vp),
        "ggml_mul_mat": ([vp, vp, vp], vp),
        "ggml_new_graph": ([vp], vp),
        "ggml_build_forward_expand": ([vp, vp], None),
        "ggml_backend_alloc_ctx_tensors_from_buft": ([vp, vp], vp),
        "ggml_backend_buffer_free": ([vp], None),
        "ggml_backend_tensor_set": ([vp, vp, sz, sz], None),
        "ggml_backend_tensor_get": ([vp, vp, sz, sz], None),
        "ggml_backend_cpu_init": ([], vp),
        "ggml_backend_cpu_set_n_threads": ([vp, ctypes.c_int], None),
        "ggml_backend_cpu_buffer_type": ([], vp),
        "ggml_backend_graph_compute": ([vp, vp], ctypes.c_int),
        "ggml_backend_free": ([vp], None),
        "ggml_quantize_chunk": ([ctypes.c_int, vp, vp, i64, i64, i64, vp], sz),
        "ggml_row_size": ([ctypes.c_int, i64], sz),
    }
    for name, (argtypes, restype) in sigs.items():
        f = getattr(g, name)
        f.argtypes, f.restype = argtypes, restype

    cpu = g.ggml_backend_dev_by_type(0)
    address = g.ggml_backend_reg_get_proc_address(g.ggml_backend_dev_backend_reg(cpu), b"ggml_backend_dev_get_extra_bufts") if cpu else None
    amx = None
    if address:
        bufts = ctypes.CFUNCTYPE(ctypes.POINTER(vp), vp)(address)(cpu)
        i = 0
        while bufts and bufts[i]:
            if g.ggml_backend_buft_name(bufts[i]) == b"AMX":
                amx = bufts[i]
            i += 1
    if amx is None:
        return {"present": False, "ok": False, "why": "no AMX buffer type in this llama.cpp build or CPU"}

    rng = random.Random(20824)
    weights = (ctypes.c_float * (_N * _K))(*(rng.uniform(-1, 1) for _ in range(_N * _K)))
    acts = (ctypes.c_float * (_M * _K))(*(rng.uniform(-1, 1) for _ in range(_M * _K)))
    q_size = g.ggml_row_size(_Q4_0, _K) * _N
    q = ctypes.create_string_buffer(q_size)
    g.ggml_quantize_chunk(_Q4_0, weights, q, 0, _N, _K, None)

    backend = g.ggml_backend_cpu_init()
    g.ggml_backend_cpu_set_n_threads(backend, 1)
    mem = g.ggml_tensor_overhead() * 8 + g.ggml_graph_overhead() + 4096

    def product(weight_buft) -> list[float]:
        wctx = g.ggml_init(InitParams(mem, None, True))
        actx = g.ggml_init(InitParams(mem, None, True))
        w = g.ggml_new_tensor_2d(wctx, _Q4_0, _K, _N)
        wbuf = g.ggml_backend_alloc_ctx_tensors_from_buft(wctx, weight_buft)
        g.ggml_backend_tensor_set(w, q, 0, q_size)
        x = g.ggml_new_tensor_2d(actx, _F32, _K, _M)
        y = g.ggml_mul_mat(actx, w, x)
        graph = g.ggml_new_graph(actx)
        g.ggml_build_forward_expand(graph, y)
        abuf = g.ggml_backend_alloc_ctx_tensors_from_buft(actx, g.ggml_backend_cpu_buffer_type())
        g.ggml_backend_tensor_set(x, acts, 0, ctypes.sizeof(acts))
        status = g.ggml_backend_graph_compute(backend, graph)
        out = (ctypes.c_float * (_N * _M))()
        g.ggml_backend_tensor_get(y, out, 0, ctypes.sizeof(out))
        for buf in (abuf, wbuf):
            g.ggml_backend_buffer_free(buf)
        for ctx in (actx, wctx):
            g.ggml_free(ctx)
        if status != 0:
            raise RuntimeError(f"ggml_backend_graph_compute returned {status}")
        return list(out)

    expected = product(g.ggml_backend_cpu_buffer_type())
    got = product(amx)
    g.ggml_backend_free(backend)
    scale = max(abs(v) for v in expected) or 1.0
    err = max(abs(a - b) for a, b in zip(expected, got)) / scale
    if not err < 1e-2:  # also catches NaN
        return {"present": True, "ok": False, "why": f"this llama.cpp build's AMX kernels compute wrong results (error {err:.3g})"}
    return {"present": True, "ok": True, "why": "", "error": err}


if __name__ == "__main__":
    try:
        print(json.dumps(_selftest()), flush=True)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which keeps AMX off
        print(json.dumps({"present": True, "ok": False, "why": f"the AMX self-test failed ({type(e).__name__}: {e})"}), flush=True)
