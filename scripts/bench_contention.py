"""Decode speed while other programs keep CPUs busy: n_threads auto (follows the load) vs a fixed count.

    scripts/bench contention [MODEL.gguf] [--busy 0,1] [--tokens 128] [--repeat 3] [--json [OUT.json]]

MODEL defaults to $LOCALCHAT_BENCH_MODEL, else the test cache's SmolLM2 (scripts/benchlib.py).

For each number of busy programs (each a Python busy loop, started before the measurement and running
through it), the engine generates --tokens tokens greedily --repeat times with n_threads auto and with
n_threads fixed at the physical cores (llama.cpp's default), alternating. Prints tokens/s (median) and
the threads auto settled on. On an idle machine both should match; with a busy core, fixed threads spin at
llama.cpp's barriers on a shared core and collapse.
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

PROMPT = ("<|im_start|>user\nWrite a long story about a dragon who learns to cook.<|im_end|>\n"
          "<|im_start|>assistant\n")


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser("scripts/bench contention", __doc__.split("\n")[0])
    p.add_argument("model", type=Path, nargs="?", help="a .gguf file")
    p.add_argument("--busy", default="0,1", help="comma-separated counts of busy programs (default 0,1)")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    args = benchlib.parse_args(p, argv)
    args.model = benchlib.find_models(args.model)[0]

    from localchat.engine import EngineClient
    from localchat.engine.llama.model import physical_cores
    from localchat.types import LoadOptions, SamplingParams

    cores = physical_cores()
    greedy = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=args.tokens)
    log_dir = Path(tempfile.mkdtemp(prefix="localchat-bench-contention-"))
    clients = {"auto": EngineClient.start(args.model, LoadOptions(n_ctx=2048), log_dir),
               f"fixed {cores}": EngineClient.start(args.model, LoadOptions(n_ctx=2048, n_threads=cores), log_dir)}
    results = []
    print(f"model {args.model.name}  physical cores {cores}  tokens {args.tokens}  repeats {args.repeat}")
    print(f"{'busy programs':>13} {'threads':<10}{'tok/s':>8}  runs                 threads used")
    try:
        for c in clients.values():
            list(c.generate(PROMPT, greedy))  # warm-up
        for busy in (int(b) for b in args.busy.split(",")):
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                time.sleep(1.0)
                rates: dict[str, list[float]] = {k: [] for k in clients}
                used: dict[str, list[int]] = {k: [] for k in clients}
                for i in range(args.repeat):
                    order = list(clients.items())
                    for name, c in (order if i % 2 == 0 else order[::-1]):  # alternate who goes first
                        gen = c.generate(PROMPT, greedy)
                        list(gen)
                        rates[name].append(gen.usage.tokens_per_second)
                        used[name].append(gen.usage.threads)
                        time.sleep(0.3)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
            row = {"busy": busy}
            for name in clients:
                med = benchlib.median(rates[name])
                row[name] = {"tok_s": med, "runs": rates[name], "threads": used[name]}
                runs = " ".join(f"{r:.1f}" for r in rates[name])
                print(f"{busy:>13} {name:<10}{med:>8.1f}  {runs:<20} {used[name]}")
            auto, fixed = row["auto"]["tok_s"], row[f"fixed {cores}"]["tok_s"]
            print(f"{'':>13} auto / fixed = {auto / fixed:.2f}")
            results.append(row)
    finally:
        for c in clients.values():
            c.close()
    benchlib.emit(args, {"model": str(args.model), "cores": cores, "rows": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
