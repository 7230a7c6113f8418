"""scripts/bench serve: `localchat serve --parallel N` next to llama-server `-np N`, in one run, on one model.

1. Builds llama-server from the vendored llama.cpp of the installed llama-cpp-python into the bench cache
   (~/.cache/localchat-bench, or LOCALCHAT_BENCH_CACHE; the build directory `scripts/bench all` uses for
   llama-bench, so libllama is compiled once). Default model: a random-weight Qwen2.5-0.5B shape in f16,
   generated into the same cache (scripts/gen_shaped_gguf.py).
2. One client alone, alternating rounds: one streaming client of `localchat serve --parallel N` against one
   of `localchat serve --parallel 1` (the server's one-at-a-time path, as it was before batching; target
   ratio >= 0.97), the engine's own single-stream rate (EngineClient, no server, no HTTP) beside them, and a
   reply constrained by a JSON schema (response_format json_schema, strict) against the free one on the
   batched server: target ratio >= 0.90, with the grammar's cost per token.
3. 1, 4, 8, 16 streaming clients (a bounded number of requests each level) against both servers, each with
   N slots and the same context per slot, threads, flash attention and GPU layers: total tokens/s,
   p50/p95 time to first token and the median per-stream rate, and localchat's total over llama-server's.

`--reliability`: instead of the above, scripts/serve_reliability.py against `localchat serve --parallel N` on a tiny
random-weight model (400 requests from 32 clients by default; --requests, --clients).

Both servers are read by the same stdlib SSE client on 127.0.0.1: TTFT is request to first content chunk,
a stream's rate is (tokens - 1) / (last chunk - first chunk), tokens from the final `usage`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PROMPT = "Write a long, detailed essay about the history of computing, from the abacus to modern GPUs."
MODEL_ID = "bench-model"
CACHE = Path(os.environ.get("LOCALCHAT_BENCH_CACHE", Path.home() / ".cache" / "localchat-bench"))


def default_model() -> Path:
    path = CACHE / "models" / "qwen2.5-0.5b-f16.gguf"
    if not path.is_file():
        from gen_shaped_gguf import generate

        path.parent.mkdir(parents=True, exist_ok=True)
        generate("qwen2.5-0.5b", path.with_suffix(".part"), "f16")
        path.with_suffix(".part").rename(path)
    return path


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# A reply that must be a JSON object whose essay runs at least as long as the reply's budget: constrained and
# free replies then decode the same number of tokens (the grammar cannot close the object early).
ESSAY_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["essay"],
                "properties": {"essay": {"type": "string", "minLength": 2000}}}


def stream_chat(port: int, model: str, content: str, max_tokens: int, timeout: float = 600,
                extra: dict | None = None) -> dict:
    """One streaming chat completion; times the first and last content chunk as they arrive."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}], "stream": True,
                       "stream_options": {"include_usage": True}, "max_tokens": max_tokens, "temperature": 0,
                       # the same settings on both servers: their defaults differ (localchat's repeat penalty is
                       # 1.1, llama-server's 1.0), and a penalty costs a pass over the vocabulary per token
                       "repeat_penalty": 1.0, "seed": 1, **(extra or {})})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
        first = last = 0.0
        chunks, usage, text = 0, None, []
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    last = time.perf_counter()
                    first = first or last
                    chunks += 1
                    text.append(piece)
    finally:
        conn.close()
    tokens = usage["completion_tokens"] if usage else chunks
    return {"tokens": tokens, "ttft": first - t0 if first else 0.0, "latency": last - t0,
            "rate": (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0, "text": "".join(text)}


def load(port: int, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    """`requests` streaming requests from `clients` threads at once (each takes the next request when done)."""
    results: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                r = stream_chat(port, model, f"{PROMPT} (request {i})", max_tokens)
            except Exception as e:  # noqa: BLE001  a failed request is reported, not fatal to the run
                with lock:
                    errors.append(str(e))
                continue
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft = [r["ttft"] for r in results]
    return {"clients": clients, "requests": len(results), "errors": errors, "tokens": sum(r["tokens"] for r in results),
            "wall": wall, "tok_s": sum(r["tokens"] for r in results) / wall, "ttft50": percentile(ttft, 50),
            "ttft95": percentile(ttft, 95), "stream_tok_s": statistics.median(r["rate"] for r in results) if results else 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str, proc: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{proc.args[0]} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def start_llama_server(binary: Path, model: Path, args, tmp: Path) -> tuple[subprocess.Popen, int]:
    port, log = free_port(), tmp / "llama-server.log"
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-np", str(args.parallel),
           "-c", str(args.parallel * args.ctx_slot), "-t", str(args.threads), "-tb", str(args.threads),
           "-fa", args.flash_attn, "-ngl", str(args.gpu_layers), "-b", "512", "--no-webui"]
    if args.kv_unified:  # one KV cache for all slots (localchat's layout for hybrid models; attention-only ones split it)
        cmd.append("--kv-unified")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    wait_http(port, "/health", proc, log)
    return proc, port


def register(home: Path, model: Path, args) -> None:
    from tests.support.models import register_local_model

    svc = register_local_model(home, model, MODEL_ID, template="chatml")
    layers = -1 if args.gpu_layers >= 99 else args.gpu_layers
    svc.paths.config_file.write_text(
        f"load:\n  n_threads: {args.threads}\n  flash_attn: '{args.flash_attn}'\n  n_gpu_layers: {layers}\n"
        f"  n_ctx: {args.ctx_slot}\n", encoding="utf-8")  # per slot: the worker holds parallel x n_ctx


def start_localchat(home: Path, args, tmp: Path, parallel: int | None = None) -> tuple[subprocess.Popen, int]:
    parallel = args.parallel if parallel is None else parallel
    log = tmp / f"localchat-serve-{parallel}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "localchat", "--home", str(home), "serve", "--port", "0",
                                 "--model", MODEL_ID, "--parallel", str(parallel)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"on http://127\.0\.0\.1:(\d+)/v1", log.read_text(errors="replace"))
        if found:
            port = int(found.group(1))
            stream_chat(port, MODEL_ID, "warm up", 4)  # the pool loads the model on the first request
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"localchat serve did not start:\n{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def single_stream(home: Path, port: int, one_slot_port: int, args) -> dict:
    """One client alone, alternating rounds: the batched server, the one-slot server and the engine itself."""
    from localchat.services import Services
    from localchat.types import Message, SamplingParams

    svc = Services.open(home)
    engine = svc.start_engine(MODEL_ID)
    try:
        template, _ = svc.chat_template(svc.entry(MODEL_ID), engine.info.chat_template,
                                        getattr(engine.info, "bos_token", None), getattr(engine.info, "eos_token", None))
        prompt = template.render([Message("user", PROMPT)], add_generation_prompt=True)
        sampling = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=args.single_tokens, seed=1)

        def direct() -> float:
            generation = engine.generate(prompt, sampling)
            first = last = 0.0
            for _ in generation:
                last = time.perf_counter()
                first = first or last
            n = generation.usage.completion_tokens
            return (n - 1) / (last - first) if n > 1 and last > first else 0.0

        def served(at: int, extra: dict | None = None) -> float:
            return float(stream_chat(at, MODEL_ID, PROMPT, args.single_tokens, extra=extra)["rate"])

        schema = {"response_format": {"type": "json_schema",
                                      "json_schema": {"name": "essay", "strict": True, "schema": ESSAY_SCHEMA}}}
        direct(), served(port), served(one_slot_port), served(port, schema)
        engine_rates, served_rates, one_slot_rates, schema_rates = [], [], [], []
        for _ in range(args.rounds):
            engine_rates.append(direct())
            served_rates.append(served(port))
            one_slot_rates.append(served(one_slot_port))
            schema_rates.append(served(port, schema))
    finally:
        engine.close()
    e, s, o, j = (statistics.median(r) for r in (engine_rates, served_rates, one_slot_rates, schema_rates))
    return {"engine": e, "served": s, "one_slot": o, "ratio": s / o if o else 0.0, "of_engine": s / e if e else 0.0,
            "schema": j, "schema_ratio": j / s if s else 0.0, "schema_cost_ms": (1 / j - 1 / s) * 1000 if j and s else 0.0,
            "engine_runs": engine_rates, "served_runs": served_rates, "one_slot_runs": one_slot_rates,
            "schema_runs": schema_rates}


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench serve", description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF file (default: a Qwen2.5-0.5B shape in f16, generated once)")
    ap.add_argument("--parallel", type=int, default=8, help="slots on both servers (llama-server -np)")
    ap.add_argument("--levels", default="1,4,8,16", help="concurrent streaming clients to try")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per reply under load")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: 2 per client, at least 4)")
    ap.add_argument("--single-tokens", type=int, default=128, help="tokens per reply, one client alone")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds, one client alone")
    ap.add_argument("--ctx-slot", type=int, default=1024, help="context per slot on both servers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", choices=["on", "off"], default="off", help="both servers (off: auto's CPU pick)")
    ap.add_argument("--gpu-layers", type=int, default=0, help="both servers; 99 = all")
    ap.add_argument("--llama-server", type=Path, help="a llama-server binary (default: build one into the cache)")
    ap.add_argument("--kv-unified", action="store_true", help="llama-server with one KV cache for all slots (as localchat for a hybrid model)")
    ap.add_argument("--reliability", action="store_true", help="the crowd test instead of the speed comparison")
    ap.add_argument("--clients", type=int, default=32, help="--reliability: clients at once")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.reliability:
        return reliability(args)
    levels = [int(x) for x in args.levels.split(",")]
    model = args.model or default_model()
    if not model.is_file():
        ap.error(f"{model} is not a file")
    if args.llama_server:
        binary = args.llama_server
    else:
        from bench_all import build_llama_tool

        binary = build_llama_tool(CACHE, "llama-server")
    per_level = {c: args.requests or max(4, 2 * c) for c in levels}
    results: dict = {"model": model.name, "parallel": args.parallel, "threads": args.threads, "tokens": args.tokens,
                     "levels": {}}
    print(f"model {model.name}, {args.parallel} slots x {args.ctx_slot} tokens, {args.threads} threads, "
          f"flash attention {args.flash_attn}, GPU layers {args.gpu_layers}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as name:
        tmp = Path(name)
        proc, port = start_llama_server(binary, model, args, tmp)
        try:
            stream_chat(port, MODEL_ID, "warm up", 4)
            for c in levels:
                results["levels"].setdefault(c, {})["llama-server"] = load(port, MODEL_ID, c, per_level[c], args.tokens)
        finally:
            stop(proc)
        home = tmp / "home"
        register(home, model, args)
        proc, port = start_localchat(home, args, tmp)
        try:
            for c in levels:
                results["levels"][c]["localchat"] = load(port, MODEL_ID, c, per_level[c], args.tokens)
            one_slot, one_slot_port = start_localchat(home, args, tmp, parallel=1)
            try:
                results["single"] = single_stream(home, port, one_slot_port, args)
            finally:
                stop(one_slot)
        finally:
            stop(proc)
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def reliability(args) -> int:
    import psutil
    from gen_shaped_gguf import generate
    from serve_reliability import run

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as name:
        tmp = Path(name)
        model = args.model or generate("qwen2-tiny", tmp / "tiny.gguf", "f32")
        home = tmp / "home"
        register(home, model, args)
        proc, port = start_localchat(home, args, tmp)
        server = psutil.Process(proc.pid)

        def worker_rss() -> int:
            return sum(p.memory_info().rss for p in server.children(recursive=True))

        try:
            r = run(port, MODEL_ID, worker_rss, n=args.requests or 400, clients=args.clients, ctx_slot=args.ctx_slot)
        finally:
            stop(proc)
    print(f"{r['requests']} requests from {r['clients']} clients, {args.parallel} slots, {r['wall_s']:.1f} s: "
          f"{r['completed']} completed, {r['hung_up']} hung up mid-reply")
    print(f"  completed replies equal to the same request answered alone: {r['same_as_alone']}, "
          f"different: {r['differ_from_alone']}")
    for d in r["diffs"]:
        print(f"    request {d['request']} ({'greedy' if d['greedy'] else 'sampled'}): the first {d['same_chars']} "
              f"characters agree, then it differs ({d['chars']} characters; alone {d['alone_chars']})")
    print(f"  server counters over the run: {r['counters']}")
    print(f"  prompt longer than a slot: HTTP {r['overflow'].get('status')}: "
          f"{(r['overflow'].get('error') or {}).get('error', {}).get('message')}")
    print(f"  worker memory: {r['rss_before_mb']:.0f} MB before, {r['rss_after_mb']:.0f} MB after")
    print("  problems: " + ("; ".join(r["problems"]) if r["problems"] else "none"))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 1 if r["problems"] else 0


def print_table(results: dict, args) -> None:
    s = results["single"]
    print(f"\none client alone, {args.single_tokens} tokens, {args.rounds} alternating rounds (median):")
    runs = lambda key: ", ".join(f"{r:.1f}" for r in s[key])  # noqa: E731
    print(f"  serve --parallel {args.parallel:<3} {s['served']:8.1f} tokens/s   (runs: {runs('served_runs')})")
    print(f"  serve --parallel 1   {s['one_slot']:8.1f} tokens/s   (runs: {runs('one_slot_runs')})")
    print(f"  ratio                {s['ratio']:8.3f}              (target >= 0.97)")
    print(f"  engine, no server    {s['engine']:8.1f} tokens/s   (runs: {runs('engine_runs')}); "
          f"served / engine {s['of_engine']:.3f}")
    print(f"  json_schema reply    {s['schema']:8.1f} tokens/s   (runs: {runs('schema_runs')}); over a free one "
          f"{s['schema_ratio']:.3f} (target >= 0.90), the grammar's cost {s['schema_cost_ms']:.2f} ms a token")
    print(f"\nstreaming clients, {args.tokens} tokens per reply, {args.parallel} slots on both servers:")
    head = f"{'tok/s':>7} {'TTFT p50':>9} {'p95':>7} {'stream':>7}"
    print(f"  {'clients':>7} {'reqs':>5} | llama-server -np {args.parallel:<3}{'':>14} | localchat --parallel {args.parallel:<3}{'':>10} | ratio")
    print(f"  {'':>7} {'':>5} | {head} | {head} |")
    for c, row in results["levels"].items():
        cells = []
        for side in ("llama-server", "localchat"):
            r = row[side]
            cells.append(f"{r['tok_s']:>7.1f} {r['ttft50']:>8.2f}s {r['ttft95']:>6.2f}s {r['stream_tok_s']:>7.1f}")
        ratio = row["localchat"]["tok_s"] / row["llama-server"]["tok_s"] if row["llama-server"]["tok_s"] else 0.0
        errors = sum(len(row[side]["errors"]) for side in row)
        note = f"  ({errors} failed requests)" if errors else ""
        print(f"  {c:>7} {row['localchat']['requests']:>5} | {cells[0]} | {cells[1]} | {ratio:5.2f}{note}")
    print("  (tok/s: all streams together; stream: the median stream's own rate; target ratio >= 1.00)")


if __name__ == "__main__":
    sys.exit(main())
