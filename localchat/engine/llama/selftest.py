"""The AMX self-test that localchat.engine.amx runs in a throwaway process (`worker --amx-selftest`)."""

from __future__ import annotations

import ctypes
import random
from typing import Any

from localchat.engine.llama import bindings, ggml

_GGML_F32, _GGML_Q4_0 = 0, 2
_AMX_M, _AMX_N, _AMX_K = 32, 64, 256  # a 32-row batch takes the AMX tile path (one row: the VNNI path)


def amx_selftest() -> dict[str, Any]:
    """The AMX self-test of localchat.engine.amx, run in a throwaway process (it may crash): a Q4_0 matrix in an
    AMX buffer times a 32-row batch through ggml's CPU backend, against the same product from an ordinary
    buffer. Uses bindings.raw(), not load(), whose avoid_amx() asks for this very test."""
    g = bindings.raw()._lib
    vp, sz, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64

    class InitParams(ctypes.Structure):
        _fields_ = [("mem_size", sz), ("mem_buffer", vp), ("no_alloc", ctypes.c_bool)]

    sigs = {
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

    _, present = ggml.cpu_extra_bufts(g)
    amx = next((b for b in present if g.ggml_backend_buft_name(b) == b"AMX"), None)
    if amx is None:
        return {"present": False, "ok": False, "why": "no AMX buffer type in this llama.cpp build or CPU"}

    rng = random.Random(20824)
    weights = (ctypes.c_float * (_AMX_N * _AMX_K))(*(rng.uniform(-1, 1) for _ in range(_AMX_N * _AMX_K)))
    acts = (ctypes.c_float * (_AMX_M * _AMX_K))(*(rng.uniform(-1, 1) for _ in range(_AMX_M * _AMX_K)))
    q_size = g.ggml_row_size(_GGML_Q4_0, _AMX_K) * _AMX_N
    q = ctypes.create_string_buffer(q_size)
    g.ggml_quantize_chunk(_GGML_Q4_0, weights, q, 0, _AMX_N, _AMX_K, None)

    backend = g.ggml_backend_cpu_init()
    g.ggml_backend_cpu_set_n_threads(backend, 1)
    mem = g.ggml_tensor_overhead() * 8 + g.ggml_graph_overhead() + 4096

    def product(weight_buft: Any) -> list[float]:
        wctx = g.ggml_init(InitParams(mem, None, True))
        actx = g.ggml_init(InitParams(mem, None, True))
        w = g.ggml_new_tensor_2d(wctx, _GGML_Q4_0, _AMX_K, _AMX_N)
        wbuf = g.ggml_backend_alloc_ctx_tensors_from_buft(wctx, weight_buft)
        g.ggml_backend_tensor_set(w, q, 0, q_size)
        x = g.ggml_new_tensor_2d(actx, _GGML_F32, _AMX_K, _AMX_M)
        y = g.ggml_mul_mat(actx, w, x)
        graph = g.ggml_new_graph(actx)
        g.ggml_build_forward_expand(graph, y)
        abuf = g.ggml_backend_alloc_ctx_tensors_from_buft(actx, g.ggml_backend_cpu_buffer_type())
        g.ggml_backend_tensor_set(x, acts, 0, ctypes.sizeof(acts))
        status = g.ggml_backend_graph_compute(backend, graph)
        out = (ctypes.c_float * (_AMX_N * _AMX_M))()
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
