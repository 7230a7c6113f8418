"""ggml's device and buffer-type C API through ctypes (llama-cpp-python binds only llama.h).

Every function takes `g`, the loaded ggml/llama shared library (`llama_cpp.llama_cpp._lib`), so this module
never imports llama_cpp itself; localchat.engine.llama.bindings hands the library in.
"""

from __future__ import annotations

import ctypes
from typing import Any

DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator", 4: "meta"}


def cpu_extra_bufts(g: Any) -> tuple[Any, list[int]]:
    """The CPU backend's NULL-terminated list of extra weight-buffer types (AMX, CPU_REPACK, ...) that the
    model loader reads, and its entries; (None, []) where this llama.cpp has no such list."""
    try:
        g.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
        g.ggml_backend_dev_by_type.restype = ctypes.c_void_p
        g.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
        g.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
        g.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        g.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
        g.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
        g.ggml_backend_buft_name.restype = ctypes.c_char_p
    except AttributeError:
        return None, []
    cpu = g.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    address = g.ggml_backend_reg_get_proc_address(g.ggml_backend_dev_backend_reg(cpu), b"ggml_backend_dev_get_extra_bufts") if cpu else None
    if not address:
        return None, []
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(cpu)
    present: list[int] = []
    while bufts and bufts[len(present)]:
        present.append(bufts[len(present)])
    return bufts, present



def devices(g: Any) -> list[dict[str, Any]]:
    """ggml backend devices (CPU, CUDA0, Metal, ...) with free/total memory, via ggml's C API."""
    try:
        g.ggml_backend_dev_count.restype = ctypes.c_size_t
        g.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        g.ggml_backend_dev_get.restype = ctypes.c_void_p
        for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
            getattr(g, name).argtypes = [ctypes.c_void_p]
            getattr(g, name).restype = ctypes.c_char_p
        g.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
        g.ggml_backend_dev_memory.restype = None
        g.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        g.ggml_backend_dev_type.restype = ctypes.c_int
        g.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
        g.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
        g.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
        g.ggml_backend_reg_name.restype = ctypes.c_char_p
    except AttributeError:
        return []
    devices = []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = g.ggml_backend_dev_backend_reg(dev)
        devices.append({
            "name": (g.ggml_backend_dev_name(dev) or b"").decode(),
            "description": (g.ggml_backend_dev_description(dev) or b"").decode(),
            "type": DEVICE_TYPES.get(g.ggml_backend_dev_type(dev), "unknown"),
            "backend": (g.ggml_backend_reg_name(reg) or b"").decode() if reg else "",
            "free_bytes": free.value,
            "total_bytes": total.value,
        })
    return devices

