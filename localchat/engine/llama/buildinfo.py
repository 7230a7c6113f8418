"""What the installed llama.cpp build supports, for `localchat doctor` (asked of `worker --build-info`,
so the CLI process never imports llama_cpp)."""

from __future__ import annotations

from typing import Any

from localchat.engine.llama import bindings, ggml

def build_info() -> dict[str, Any]:
    """What the installed llama-cpp-python build can do: version, GPU offload, devices and their memory."""
    lib = bindings.load()
    info: dict[str, Any] = {
        "llama_cpp_python": bindings.package_version(),
        "gpu_offload": bool(lib.llama_supports_gpu_offload()),
        "mmap": bool(lib.llama_supports_mmap()),
        "flash_attention": ("available: flash_attn auto turns it on for a model on a GPU where every layer's device supports "
                            "it, off for a model wholly on the CPU (slower there past a few hundred tokens)"),
        "system_info": lib.llama_print_system_info().decode("utf-8", "replace").strip(),
        "devices": ggml.devices(lib._lib),
    }
    try:
        info["llama_cpp"] = lib.llama_version().decode()
    except AttributeError:
        pass
    info["backends"] = sorted({d["backend"] for d in info["devices"] if d.get("backend")})
    from localchat.engine import amx

    info["amx"] = amx.decide(bindings.selftest_cache_dir()).reason
    return info

