"""Model swap cost next to a cold worker start, and the parent's memory over the swaps.

    scripts/bench swap [MODEL_A.gguf [MODEL_B.gguf]] [--swaps 20] [--threads N] [--json [OUT.json]]

Without models: $LOCALCHAT_BENCH_MODEL, else the test cache's two models (scripts/benchlib.py); one model
alone is swapped with itself.

A swap = close the current EngineClient (its worker process ends) + start one on the other model and wait
until it is loaded. Printed side by side: median swap time, process start (a worker answering with no model:
python start-up + localchat imports), model load as the worker reports it (ModelInfo.load_seconds), and the
parent's RSS before and after all swaps (target: within 50 MB).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402


def process_start_seconds(repeat: int = 3) -> float:
    """A bare worker interpreter importing the engine modules (what a swap pays before llama.cpp loads)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import localchat.engine.worker, llama_cpp"], check=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
    return benchlib.median(times)


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser("scripts/bench swap", __doc__.split("\n")[0])
    p.add_argument("models", type=Path, nargs="*", metavar="MODEL", help="two .gguf files (one is swapped with itself)")
    p.add_argument("--swaps", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-ctx", type=int, default=2048)
    args = benchlib.parse_args(p, argv)
    if len(args.models) > 2:
        p.error("at most two models")
    args.models = benchlib.find_models(args.models, count=2)
    if len(args.models) == 1:
        args.models *= 2
    import psutil

    from localchat.engine import EngineClient
    from localchat.types import LoadOptions

    me = psutil.Process()
    options = LoadOptions(n_ctx=args.n_ctx, n_threads=args.threads)
    log_dir = Path(tempfile.mkdtemp(prefix="localchat-bench-swap-"))
    client = EngineClient.start(args.models[0], options, log_dir)
    rss_before = me.memory_info().rss
    swaps, loads = [], {m.name: [] for m in args.models}
    for i in range(args.swaps):
        path = args.models[(i + 1) % 2]
        t = time.perf_counter()
        client.close()
        client = EngineClient.start(path, options, log_dir)
        swaps.append(time.perf_counter() - t)
        loads[path.name].append(client.info.load_seconds)
    client.close()
    rss_after = me.memory_info().rss
    start = process_start_seconds()
    figures = {
        "swaps": args.swaps,
        "swap_s_median": benchlib.median(swaps),
        "swap_s_max": max(swaps),
        "process_start_s": start,
        "load_s_median": {name: benchlib.median(v) for name, v in loads.items() if v},
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
    }
    expected = start + max(figures["load_s_median"].values())
    figures["swap_over_start_plus_load"] = figures["swap_s_median"] / expected
    print(f"{args.swaps} swaps between {args.models[0].name} and {args.models[1].name}")
    print(f"  swap (close + start + load), median  {figures['swap_s_median'] * 1000:8.0f} ms  (max {figures['swap_s_max'] * 1000:.0f} ms)")
    print(f"  process start (python + imports)     {start * 1000:8.0f} ms")
    for name, s in figures["load_s_median"].items():
        print(f"  model load {name:<26}{s * 1000:8.0f} ms")
    print(f"  swap / (process start + slower load) {figures['swap_over_start_plus_load']:8.2f}")
    print(f"  parent RSS before {figures['rss_before_mb']:.1f} MB, after {figures['rss_after_mb']:.1f} MB "
          f"({figures['rss_after_mb'] - figures['rss_before_mb']:+.1f} MB; target within 50 MB)")
    benchlib.emit(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
