"""scripts/bench serve: the OpenAI-compatible server against the engine alone, on the same model and settings.

    scripts/bench serve [--model PATH] [--max-tokens N] [--rounds N] [--levels 1,4,16] [--threads N] [--json [PATH]]

1. One streaming client: decode rate through `localchat serve` (HTTP + SSE, read by our stdlib remote
   client) against the EngineClient used directly, alternating runs; target ratio >= 0.95.
2. 1, 4 and 16 concurrent streaming clients: total throughput and p50/p95 latency (request to last token)
   and time to first token. The server runs one generation at a time per model (first come, first served),
   so throughput should stay flat while latency grows with the line.

Rates are measured on the client side the same way for both paths: (tokens - 1) / (last delta - first delta).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402
from localchat.types import Message, SamplingParams  # noqa: E402

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


def single_client(svc, remote, template, sampling: SamplingParams, rounds: int, server_pid: int) -> dict:
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
    d = benchlib.median(r["rate"] for r in direct)
    s = benchlib.median(r["rate"] for r in served)
    print(f"\n1 streaming client, {direct[0]['tokens']} tokens per reply, {rounds} alternating rounds (median):")
    runs_d = ", ".join(f"{r['rate']:.1f}" for r in direct)
    runs_s = ", ".join(f"{r['rate']:.1f}" for r in served)
    print(f"  engine alone        {d:8.1f} tokens/s   (runs: {runs_d})")
    print(f"  through the server  {s:8.1f} tokens/s   (runs: {runs_s})")
    paired = benchlib.median(b["rate"] / a["rate"] for a, b in zip(direct, served))
    print(f"  ratio server/engine {s / d:8.3f}            (target >= 0.95; median of per-round ratios {paired:.3f})")
    td = benchlib.median(r["ttft"] for r in direct) * 1000
    ts = benchlib.median(r["ttft"] for r in served) * 1000
    print(f"  time to first token {td:8.1f} ms alone, {ts:.1f} ms through the server (prompt tokens evaluated: "
          f"{direct[-1]['evaluated']} alone, {served[-1]['evaluated']} through the server; the rest reused)")
    tokens = sum(r["tokens"] for r in served)
    wall = sum(r["latency"] for r in served)
    print(f"  server process CPU  {server_cpu / tokens * 1e6:8.1f} us per token "
          f"({100 * server_cpu / wall:.1f}% of one core while streaming; the worker's llama.cpp time excluded)")
    return {"tokens": direct[0]["tokens"], "engine_tok_s": d, "server_tok_s": s, "ratio": s / d, "paired_ratio": paired,
            "engine_ttft_ms": td, "server_ttft_ms": ts, "server_cpu_us_per_token": server_cpu / tokens * 1e6}


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
            "p50": benchlib.percentile(latency, 50), "p95": benchlib.percentile(latency, 95),
            "ttft50": benchlib.percentile(ttft, 50), "ttft95": benchlib.percentile(ttft, 95)}


def main(argv: list[str] | None = None) -> int:
    ap = benchlib.parser("scripts/bench serve", __doc__, raw=True)
    benchlib.add_model(ap, "GGUF file")
    ap.add_argument("--max-tokens", type=int, default=256, help="tokens per reply in the single-client runs")
    ap.add_argument("--rounds", type=int, default=5, help="alternating single-client rounds")
    ap.add_argument("--load-tokens", type=int, default=64, help="tokens per reply under concurrency")
    ap.add_argument("--levels", default="1,4,16", help="concurrent clients to try")
    ap.add_argument("--threads", type=int, help="llama.cpp threads for both paths (default: the engine's own "
                    "choice, one per physical core; on a busy machine 1 avoids OpenMP spinning against other work)")
    args = benchlib.parse_args(ap, argv)
    args.model = benchlib.find_models(args.model)[0]

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
            figures = {"model": str(args.model), "single": single_client(svc, remote, template, sampling, args.rounds,
                                                                         proc.pid), "concurrent": []}
            load = SamplingParams(temperature=0.0, max_tokens=args.load_tokens, seed=1)
            print(f"\nconcurrent streaming clients, {args.load_tokens} tokens per reply, one generation at a time:")
            print(f"  {'clients':>7} {'requests':>8} {'tokens/s':>9} {'p50 latency':>12} {'p95 latency':>12} "
                  f"{'p50 TTFT':>9} {'p95 TTFT':>9}")
            for clients in [int(x) for x in args.levels.split(",")]:
                r = concurrent(remote, load, clients, max(8, 2 * clients))
                figures["concurrent"].append(r)
                print(f"  {r['clients']:>7} {r['requests']:>8} {r['tokens'] / r['wall']:>9.1f} {r['p50']:>11.2f}s "
                      f"{r['p95']:>11.2f}s {r['ttft50']:>8.2f}s {r['ttft95']:>8.2f}s")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    benchlib.emit(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
