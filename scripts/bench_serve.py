"""scripts/bench serve: the OpenAI-compatible server against the engine alone, on the same model and settings.

1. One streaming client: decode rate through `localchat serve` (HTTP + SSE, read by our stdlib remote
   client) against the EngineClient used directly, alternating runs; target ratio >= 0.95.
2. 1, 4 and 16 concurrent streaming clients: total throughput and p50/p95 latency (request to last token)
   and time to first token. The server runs one generation at a time per model (first come, first served),
   so throughput should stay flat while latency grows with the line.

Rates are measured on the client side the same way for both paths: (tokens - 1) / (last delta - first delta).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localchat.types import Message, SamplingParams  # noqa: E402

DEFAULT_MODEL = Path("/work/models/smollm2-135m-instruct-q4_1.gguf")
PROMPT = "Write a long, detailed essay about the history of computing, from the abacus to modern GPUs."
MODEL_ID = "bench-model"


def register(home: Path, model: Path, threads: int | None) -> None:
    from tests.support.models import register_local_model

    svc = register_local_model(home, model, MODEL_ID, template="chatml")
    if threads:  # both paths load the model through this home's config: the same settings
        svc.paths.config_file.write_text(f"load:\n  n_threads: {threads}\n", encoding="utf-8")


def start_server(home: Path) -> tuple[subprocess.Popen, str, Path]:
    log = home.parent / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "localchat", "--home", str(home), "serve", "--port", "0",
                                 "--model", MODEL_ID], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", log.read_text(errors="replace"))
        if found:
            return proc, found.group(1), log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text(errors='replace')}")


def timed(generate) -> dict:
    """Run one generation, timing each delta as the client receives it."""
    t0 = time.perf_counter()
    generation = generate()
    first = last = 0.0
    for _ in generation:
        last = time.perf_counter()
        if not first:
            first = last
    tokens = generation.usage.completion_tokens
    return {"tokens": tokens, "ttft": first - t0, "latency": last - t0,
            "rate": (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0,
            "evaluated": generation.usage.prompt_eval_tokens, "text": generation.text}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def single_client(svc, remote, template, sampling: SamplingParams, rounds: int, server_pid: int) -> None:
    import psutil

    server = psutil.Process(server_pid)
    messages = [Message("user", PROMPT)]
    prompt = template.render(messages, add_generation_prompt=True)
    engine = svc.start_engine(MODEL_ID)
    server_cpu = 0.0
    try:
        timed(lambda: engine.generate(prompt, sampling))  # warm-up: page in the weights on both sides
        timed(lambda: remote.generate(messages, sampling))
        direct, served = [], []
        for _ in range(rounds):
            direct.append(timed(lambda: engine.generate(prompt, sampling)))
            before = sum(server.cpu_times()[:2])
            served.append(timed(lambda: remote.generate(messages, sampling)))
            server_cpu += sum(server.cpu_times()[:2]) - before  # the server process only, not its worker
    finally:
        engine.close()
    if direct[0]["text"] != served[0]["text"]:
        print("warning: the two paths produced different text (different prompt or sampling?)")
    d = statistics.median(r["rate"] for r in direct)
    s = statistics.median(r["rate"] for r in served)
    print(f"\n1 streaming client, {direct[0]['tokens']} tokens per reply, {rounds} alternating rounds (median):")
    runs_d = ", ".join(f"{r['rate']:.1f}" for r in direct)
    runs_s = ", ".join(f"{r['rate']:.1f}" for r in served)
    print(f"  engine alone        {d:8.1f} tokens/s   (runs: {runs_d})")
    print(f"  through the server  {s:8.1f} tokens/s   (runs: {runs_s})")
    paired = statistics.median(b["rate"] / a["rate"] for a, b in zip(direct, served))
    print(f"  ratio server/engine {s / d:8.3f}            (target >= 0.95; median of per-round ratios {paired:.3f})")
    td = statistics.median(r["ttft"] for r in direct) * 1000
    ts = statistics.median(r["ttft"] for r in served) * 1000
    print(f"  time to first token {td:8.1f} ms alone, {ts:.1f} ms through the server (prompt tokens evaluated: "
          f"{direct[-1]['evaluated']} alone, {served[-1]['evaluated']} through the server; the rest reused)")
    tokens = sum(r["tokens"] for r in served)
    wall = sum(r["latency"] for r in served)
    print(f"  server process CPU  {server_cpu / tokens * 1e6:8.1f} us per token "
          f"({100 * server_cpu / wall:.1f}% of one core while streaming; the worker's llama.cpp time excluded)")


def concurrent(remote, sampling: SamplingParams, clients: int, requests: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            r = timed(lambda: remote.generate([Message("user", f"{PROMPT} (request {i})")], sampling))  # noqa: B023 - runs now
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latency = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    return {"clients": clients, "requests": len(results), "tokens": sum(r["tokens"] for r in results), "wall": wall,
            "p50": percentile(latency, 50), "p95": percentile(latency, 95),
            "ttft50": percentile(ttft, 50), "ttft95": percentile(ttft, 95)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"GGUF file (default: {DEFAULT_MODEL})")
    ap.add_argument("--max-tokens", type=int, default=256, help="tokens per reply in the single-client runs")
    ap.add_argument("--rounds", type=int, default=5, help="alternating single-client rounds")
    ap.add_argument("--load-tokens", type=int, default=64, help="tokens per reply under concurrency")
    ap.add_argument("--levels", default="1,4,16", help="concurrent clients to try")
    ap.add_argument("--threads", type=int, help="llama.cpp threads for both paths (default: the engine's own "
                    "choice, one per physical core; on a busy machine 1 avoids OpenMP spinning against other work)")
    args = ap.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"no model at {args.model}: pass --model PATH.gguf (e.g. shared/scripts/fetch-test-models)")

    from localchat.engine.remote import RemoteEngineClient
    from localchat.services import Services

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        home = Path(tmp) / "home"
        register(home, args.model, args.threads)
        svc = Services.open(home)
        entry = svc.entry(MODEL_ID)
        proc, url, log = start_server(home)
        try:
            remote = RemoteEngineClient.start(url, MODEL_ID)
            probe = svc.start_engine(MODEL_ID)
            info = probe.info
            template, _ = svc.chat_template(entry, info.chat_template, getattr(info, "bos_token", None),
                                            getattr(info, "eos_token", None))
            probe.close()
            print(f"model {args.model.name}: n_ctx {info.n_ctx}, {info.n_threads or '?'} threads, "
                  f"GPU layers {info.n_gpu_layers}, {os.cpu_count()} CPUs")
            sampling = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, seed=1)
            single_client(svc, remote, template, sampling, args.rounds, proc.pid)
            load = SamplingParams(temperature=0.0, max_tokens=args.load_tokens, seed=1)
            print(f"\nconcurrent streaming clients, {args.load_tokens} tokens per reply, one generation at a time:")
            print(f"  {'clients':>7} {'requests':>8} {'tokens/s':>9} {'p50 latency':>12} {'p95 latency':>12} "
                  f"{'p50 TTFT':>9} {'p95 TTFT':>9}")
            for clients in [int(x) for x in args.levels.split(",")]:
                r = concurrent(remote, load, clients, max(8, 2 * clients))
                print(f"  {r['clients']:>7} {r['requests']:>8} {r['tokens'] / r['wall']:>9.1f} {r['p50']:>11.2f}s "
                      f"{r['p95']:>11.2f}s {r['ttft50']:>8.2f}s {r['ttft95']:>8.2f}s")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
