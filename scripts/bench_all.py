"""The whole performance suite in one table: llama.cpp's own llama-bench next to localchat.

    scripts/bench all [MODEL.gguf ...] [--threads 2] [--tokens 128] [--repeat 3] [--flash-attn off|on] [--skip-build]
                      [--json [OUT.json]]

1. Builds llama.cpp's `llama-bench` (build_llama_tool: `scripts/bench serve` builds llama-server there too) from the vendored sources of the installed llama-cpp-python version:
   `pip download --no-binary :all: --no-deps llama-cpp-python==VERSION` into ~/.cache/localchat-bench
   (override: LOCALCHAT_BENCH_CACHE), CPU build with scripts/build/gcc-amx-fix.h as llama-cpp-python gets it,
   only the llama-bench target, -j2; reused when present.
2. Per model (default: $LOCALCHAT_BENCH_MODEL, else SmolLM2 and Qwen2.5-Coder from the test cache, see
   scripts/benchlib.py): `scripts/bench engine --native` (llama-bench
   tg, bare generate(), create_completion(stream=True), localchat engine), llama-bench pp512, and
   `scripts/bench tui` when it exists; then `scripts/bench turns`, `scripts/bench swap`,
   `scripts/bench startup` and `scripts/bench contention` (first model), each with --json, and prints one table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402


def build_llama_bench(cache: Path) -> Path:
    return build_llama_tool(cache, "llama-bench")


def build_llama_tool(cache: Path, target: str) -> Path:
    """bin/TARGET (llama-bench, llama-server) of one CPU build of the vendored llama.cpp, shared by the benches so
    libllama is compiled once."""
    from importlib.metadata import version

    v = version("llama-cpp-python")
    build = cache / f"build-{v}"
    binary = build / "bin" / target
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    sdist_dir = cache / "sdist"
    sdist = next(sdist_dir.glob(f"llama_cpp_python-{v}.tar.gz"), None) if sdist_dir.is_dir() else None
    if sdist is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                        f"llama-cpp-python=={v}", "-d", str(sdist_dir)], check=True)
        sdist = next(sdist_dir.glob(f"llama_cpp_python-{v}.tar.gz"))
    src = cache / f"llama_cpp_python-{v}"
    if not src.is_dir():
        with tarfile.open(sdist) as tar:
            tar.extractall(cache, filter="data")
    # the same AMX intrinsics fix scripts/_venv.sh compiles llama-cpp-python with (else pp crashes under GCC 12);
    # the server without its web UI (no npm, no download) or TLS
    fix = ROOT / "scripts" / "build" / "gcc-amx-fix.h"
    subprocess.run(["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
                    "-DLLAMA_OPENSSL=OFF", f"-DCMAKE_CXX_FLAGS=-include {fix}"], check=True)
    subprocess.run(["cmake", "--build", str(build), "--target", target, "-j2"], check=True)
    return binary


def bench(name: str, *args: str) -> dict | list:
    """Run scripts/bench_NAME.py with --json and return what it wrote (its table goes to our stdout too)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    subprocess.run([sys.executable, str(ROOT / "scripts" / f"bench_{name}.py"), *args, "--json", str(out)], check=True)
    return json.loads(out.read_text())


def llama_bench_pp(binary: Path, model: Path, threads: int, flash_attn: str) -> float:
    done = subprocess.run([str(binary), "-m", str(model), "-t", str(threads), "-p", "512", "-n", "0", "-r", "3",
                           "-fa", "1" if flash_attn == "on" else "0", "-o", "json"], capture_output=True, text=True, check=True)
    runs = [r for r in json.loads(done.stdout) if r.get("n_prompt")]
    return runs[0]["avg_ts"] if runs else 0.0


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser("scripts/bench all", __doc__.split("\n")[0])
    p.add_argument("models", type=Path, nargs="*", help=".gguf files")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--flash-attn", choices=["on", "off"], default="off",
                   help="for every row (default off: what flash_attn auto picks for a model on the CPU)")
    p.add_argument("--skip-build", action="store_true", help="no llama-bench: the engine's tg loop is the native figure")
    args = benchlib.parse_args(p, argv)
    args.models = benchlib.find_models(args.models, count=len(benchlib.TEST_MODELS))
    cache = Path(os.environ.get("LOCALCHAT_BENCH_CACHE", Path.home() / ".cache" / "localchat-bench"))
    binary = None if args.skip_build else build_llama_bench(cache)
    t = str(args.threads)
    results: dict = {"models": {}}
    for model in args.models:
        native = ["--native", str(binary)] if binary else []
        r = {"engine": bench("engine", str(model), "--threads", t, "--tokens", str(args.tokens),
                             "--repeat", str(args.repeat), "--flash-attn", args.flash_attn, *native)}
        if binary:
            r["pp512_llama_bench"] = llama_bench_pp(binary, model, args.threads, args.flash_attn)
        if (ROOT / "scripts" / "bench_tui.py").is_file():
            r["tui"] = bench("tui", "--model", str(model), "--tokens", str(args.tokens), "--threads", t,
                             "--prompt", "Write a long story about a dragon who learns to cook.",
                             "--repeats", str(args.repeat), "--frames", "3", "--swaps", "2")
        results["models"][model.name] = r
    results["turns"] = bench("turns", *map(str, args.models), "--threads", t)
    results["swap"] = bench("swap", *map(str, args.models[:2] if len(args.models) > 1 else args.models * 2), "--threads", t)
    results["startup"] = bench("startup")
    results["contention"] = bench("contention", str(args.models[0]), "--busy", "0,1", "--tokens", str(args.tokens),
                                  "--repeat", str(args.repeat))
    print_table(results)
    benchlib.emit(args, results)
    return 0


def print_table(results: dict) -> None:
    print("\n" + "=" * 100)
    print(f"{'model':<40}{'method':<34}{'tok/s':>9}{'/ native':>10}")
    labels = [("llama-bench-d0", "llama-bench tg, empty cache"), ("llama-bench", "llama-bench tg -d PROMPT (native)"),
              ("tg", "tg loop -d PROMPT (via ctypes)"),
              ("bare", "llama-cpp-python generate()"), ("stream", "create_completion(stream=True)"),
              ("engine", "localchat engine")]
    for name, r in results["models"].items():
        med = r["engine"]["median_tok_s"]
        native = med.get("llama-bench") or med.get("tg")
        for key, label in labels:
            if key in med:
                print(f"{name:<40}{label:<34}{med[key]:>9.1f}{med[key] / native:>10.1%}")
        tui = r.get("tui")
        if isinstance(tui, dict) and "tokens_per_second" in tui:
            print(f"{name:<40}{'localchat TUI (own run)':<34}{tui['tokens_per_second']:>9.1f}{tui['tokens_per_second'] / native:>10.1%}"
                  f"   app/engine {tui['ratio']:.3f}, stall {tui['max_stall_ms']:.1f} ms, first frame {tui['first_frame_ms']:.0f} ms")
        if "pp512_llama_bench" in r:
            print(f"{name:<40}{'prompt processing pp512 (native)':<34}{r['pp512_llama_bench']:>9.1f}")
    for t in results["turns"]:
        first, last = t["turns"][0], t["turns"][-1]
        print(f"{t['model']:<40}TTFT turn 1 {first['ttft_ms']:.0f} ms ({first['evaluated']} tok), turn {last['turn']} "
              f"{last['ttft_ms']:.0f} ms ({last['evaluated']} of {last['prompt_tokens']} tok): ratio {t['ttft_ratio']:.2f}")
    s = results["swap"]
    print(f"swap: {s['swap_s_median'] * 1000:.0f} ms median vs process start {s['process_start_s'] * 1000:.0f} ms + load "
          f"{max(s['load_s_median'].values()) * 1000:.0f} ms; parent RSS {s['rss_before_mb']:.1f} -> {s['rss_after_mb']:.1f} MB")
    st = results["startup"]
    print(f"startup: localchat --help {st['help_s_median'] * 1000:.0f} ms; heavy imports: {', '.join(st['heavy_imports']) or 'none'}")
    c = results["contention"]
    fixed = f"fixed {c['cores']}"
    for row in c["rows"]:
        print(f"{Path(c['model']).name}: {row['busy']} busy program(s): threads auto {row['auto']['tok_s']:.1f} tok/s "
              f"(threads {row['auto']['threads']}), {fixed} {row[fixed]['tok_s']:.1f} tok/s")


if __name__ == "__main__":
    sys.exit(main())
