"""Decode speed of localchat's engine next to llama-cpp-python on the same model, settings and prompt.

    scripts/bench engine [MODEL.gguf] [--tokens 128] [--threads N] [--repeat 3] [--n-ctx N] [--flash-attn on]
                                    [--gpu-layers auto|all|N] [--native PATH/TO/llama-bench] [--json [OUT.json]]

MODEL defaults to $LOCALCHAT_BENCH_MODEL, else the test cache's SmolLM2 (scripts/benchlib.py).

In one run, repeats interleaved (bare, stream, engine, bare, ...), greedy decoding:
  bare     llama-cpp-python's `Llama.generate()` loop, tokens consumed as they come
  stream   `Llama.create_completion(stream=True)`, the path most applications use
  engine   localchat: worker process + pipe + EngineClient, the consumer iterating the text deltas
Rate = (tokens - 1) / (time from the first token to the last), as seen by the consumer, which is also
how `Usage.tokens_per_second` is defined. "llama.cpp decode" is llama.cpp's own time inside llama_decode
during the bare runs (its perf counters). "tg loop" does what llama-bench's tg test does (one-token decodes,
no sampling) with one ctypes call per token: the stand-in for llama-bench's tg, against which the "/ tg"
column compares; with --native, llama-bench itself runs too (tg of the same length, same threads, offload
and flash attention) and is the reference. Both decode after as many cached tokens as the prompt has
(llama-bench -d PROMPT), because that is where the engine decodes: on a CPU a token's attention costs grow
with the context (a 40-token head start costs SmolLM2 about 10%), so tg from an empty cache, llama-bench's
default, is printed too but is not a like-for-like reference. The figure per method is the median of the repeats.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's localchat, also for the worker it starts

import benchlib  # noqa: E402

DEFAULT_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "Write a long, detailed essay about the history of the Roman Empire, from its founding to its fall."
    "<|im_end|>\n<|im_start|>assistant\n"
)


def rate(n_tokens: int, seconds: float) -> float:
    return (n_tokens - 1) / seconds if n_tokens > 1 and seconds > 0 else 0.0


class TgLoop:
    """What llama-bench's tg test does, driven from Python: one-token llama_decode calls after `depth` tokens
    already in the cache (llama-bench -d; set to the prompt's length, so it decodes where the engine does),
    no sampling; one ctypes call per token is all the Python there is."""

    def __init__(self, args) -> None:
        import ctypes

        import llama_cpp

        self.lib = lib = llama_cpp
        params = lib.llama_model_default_params()
        params.n_gpu_layers = args.llama_gpu_layers
        self.model = lib.llama_model_load_from_file(str(args.model).encode(), params)
        cparams = lib.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch = args.n_ctx, args.n_batch
        cparams.n_threads = cparams.n_threads_batch = args.threads
        cparams.flash_attn_type = 1 if args.flash_attn == "on" else 0
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        self.mem = lib.llama_get_memory(self.ctx)
        vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(vocab)
        self.first = lib.llama_vocab_bos(vocab) if lib.llama_vocab_get_add_bos(vocab) else 1
        self.token = (ctypes.c_int32 * 1)()
        self.batch = lib.llama_batch_get_one(self.token, 1)
        self.n, self.n_batch = args.tokens, args.n_batch
        self.depth = 0
        self.run()  # warm-up, as llama-bench does

    def run(self) -> float:
        lib, ctx, batch, token = self.lib, self.ctx, self.batch, self.token
        lib.llama_memory_clear(self.mem, True)
        if self.depth:  # untimed, as llama-bench -d fills the cache before its tg run
            import ctypes

            ids = [(self.first + i * 31) % self.n_vocab for i in range(self.depth)]
            for at in range(0, self.depth, self.n_batch):  # llama_decode takes at most n_batch tokens a call
                part = ids[at:at + self.n_batch]
                lib.llama_decode(ctx, lib.llama_batch_get_one((ctypes.c_int32 * len(part))(*part), len(part)))
        token[0] = self.first
        start = time.perf_counter()
        for i in range(self.n):
            lib.llama_decode(ctx, batch)
            token[0] = (i * 7919 + 13) % self.n_vocab
        lib.llama_synchronize(ctx)
        return self.n / (time.perf_counter() - start)


class LlamaRuns:
    """The two llama-cpp-python baselines, sharing one loaded Llama."""

    def __init__(self, args) -> None:
        import llama_cpp

        from localchat.engine.llama.bindings import avoid_amx

        self.amx_note = avoid_amx()  # as the engine does (this llama.cpp crashes in AMX prompt kernels)
        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(
            str(args.model), n_ctx=args.n_ctx, n_batch=args.n_batch, n_threads=args.threads,
            n_threads_batch=args.threads, flash_attn=args.flash_attn == "on", n_gpu_layers=args.llama_gpu_layers,
            verbose=False,
        )
        self.tokens = self.llm.tokenize(args.prompt.encode(), add_bos=True, special=True)
        self.vocab = self.llm._model.vocab
        self.max_tokens = args.tokens

    def bare(self) -> dict:
        lib, llm = self.lib, self.llm
        lib.llama_perf_context_reset(llm._ctx.ctx)
        n, t_first, t_last = 0, 0.0, 0.0
        for token in llm.generate(self.tokens, temp=0.0, repeat_penalty=1.0):
            if lib.llama_vocab_is_eog(self.vocab, token):
                break
            t_last = time.perf_counter()
            n += 1
            if n == 1:
                t_first = t_last
            if n >= self.max_tokens:
                break
        perf = lib.llama_perf_context(llm._ctx.ctx)
        # perf counts every decode call; the prompt is its own (batched) call, tokens after it are n_eval
        native = perf.n_eval / (perf.t_eval_ms / 1000) if perf.t_eval_ms > 0 else 0.0
        return {"tokens": n, "rate": rate(n, t_last - t_first), "native": native}

    def stream(self) -> dict:
        n, t_first, t_last = 0, 0.0, 0.0
        t_start = time.perf_counter()
        chunks = self.llm.create_completion(self.tokens, max_tokens=self.max_tokens, temperature=0.0,
                                            repeat_penalty=1.0, stream=True)
        for _chunk in chunks:
            t_last = time.perf_counter()
            n += 1
            if n == 1:
                t_first = t_last
        return {"chunks": n, "t": t_last - t_first, "t_call": time.perf_counter() - t_start}

    def stream_rate(self, n_tokens: int) -> float:
        """Greedy, so the same tokens as the bare loop. When every token came as its own chunk, time first to
        last chunk as the other rows do; when llama-cpp-python held text back (incomplete UTF-8, stop-string
        look-ahead: random-weight models do this a lot), chunks no longer mark tokens, so the whole call is
        timed instead (one cached-prompt token more, a slight underestimate rather than a wild overestimate)."""
        s = self.stream()
        return rate(n_tokens, s["t"]) if s["chunks"] == n_tokens else n_tokens / s["t_call"]


def engine_run(client, args, sampling) -> dict:
    gen = client.generate(args.prompt, sampling)
    t_first = t_last = 0.0
    for _delta in gen:
        t_last = time.perf_counter()
        if not t_first:
            t_first = t_last
    usage = gen.usage
    return {"tokens": usage.completion_tokens, "rate": rate(usage.completion_tokens, t_last - t_first),
            "worker_rate": usage.tokens_per_second, "ttft": usage.ttft}


def llama_bench(args, depth: int) -> dict[int, float]:
    """tg rates from llama.cpp's own llama-bench with the same settings (no Python at all), from an empty cache
    (its default) and after `depth` tokens (-d): the engine decodes after its prompt, and on a CPU each token
    costs more the longer the context it attends over (flash attention skips masked cells)."""
    cmd = [str(args.native), "-m", str(args.model), "-p", "0", "-n", str(args.tokens), "-t", str(args.threads),
           "-ngl", str(99 if args.llama_gpu_layers < 0 else args.llama_gpu_layers), "-d", f"0,{depth}",
           "-fa", "1" if args.flash_attn == "on" else "0", "-r", str(max(args.repeat, 3)), "-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"llama-bench failed: {done.stderr.strip().splitlines()[-1:]}")
    runs = [r for r in json.loads(done.stdout) if r.get("n_gen") == args.tokens and not r.get("n_prompt")]
    return {int(r.get("n_depth", 0)): float(r["avg_ts"]) for r in runs}


LABELS = {
    "llama-bench-d0": "llama-bench tg, empty cache (its default)",
    "llama-bench": "llama-bench tg -d PROMPT (llama.cpp, no Python)",
    "tg": "llama.cpp tg loop -d PROMPT (ctypes, no sampling)",
    "tg-amx": "  same, AMX weight buffers (llama-bench's default)",
    "native": "llama.cpp decode (perf counters, bare runs)",
    "bare": "llama-cpp-python Llama.generate() loop",
    "stream": "llama-cpp-python create_completion(stream)",
    "engine": "localchat engine (worker+pipe+client)",
    "worker": "  engine, as timed inside the worker",
    "sampled": "engine, sampled (t=0.7 k=40 p=0.95 rp=1.1)",
}


def report(args, rows: dict[str, list[float]], extra: dict[str, list[float]], n_tokens: int) -> dict:
    """Print the table (median of the repeats, best, ratios) and return the figures."""
    if extra["sampled"]:
        rows["sampled"] = extra["sampled"]
    med = {key: benchlib.median(values) for key, values in rows.items() if values}
    bare = med["bare"]
    native_key = "llama-bench" if "llama-bench" in med else "tg"
    native = med[native_key]
    print(f"\n{'method':<46}{'tok/s':>8}{'best':>8}{'/ bare':>9}{'/ ' + native_key:>15}")
    for key in LABELS:
        if key in med:
            print(f"{LABELS[key]:<46}{med[key]:>8.1f}{max(rows[key]):>8.1f}{med[key] / bare:>9.1%}{med[key] / native:>15.1%}")
    ttft = benchlib.median(extra["ttft"])
    print(f"\n{n_tokens} tokens per run after a {args.depth}-token prompt (PROMPT = {args.depth}); "
          f"engine time to first token with the prompt cached: {ttft * 1e3:.1f} ms (median)")
    if "sampled" in med:
        cost = (1 / med["sampled"] - 1 / med["engine"]) * 1e3
        print(f"sampling (temperature, top-k, top-p, min-p, repeat penalty) costs {cost:.2f} ms per token over greedy")
    print(f"engine / bare = {med['engine'] / bare:.1%}   engine / {native_key} = {med['engine'] / native:.1%}")
    return {"model": str(args.model), "threads": args.threads, "tokens": n_tokens, "repeats": args.repeat, "depth": args.depth,
            "flash_attn": args.flash_attn, "gpu_layers": args.gpu_layers, "median_tok_s": med,
            "runs_tok_s": rows, "engine_ttft_s": ttft,
            "ratios": {"engine/bare": med["engine"] / bare, f"engine/{native_key}": med["engine"] / native}}


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser("scripts/bench engine", __doc__.split("\n")[0])
    p.add_argument("model", type=Path, nargs="?", help="a .gguf file")
    p.add_argument("--tokens", type=int, default=128, help="tokens to generate per run (default 128)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per method (default 3)")
    p.add_argument("--n-ctx", type=int, default=None,
                   help="context size of every row (default: llama-bench's, prompt + tokens padded to 256 as llama.cpp "
                        "pads it: without flash attention a token's cost grows with the KV cache's size, not only its use)")
    p.add_argument("--n-batch", type=int, default=512)
    p.add_argument("--flash-attn", choices=["on", "off"], default="on")
    p.add_argument("--gpu-layers", default="auto", help="auto (all if the build can offload), all, or a number")
    p.add_argument("--native", type=Path, help="a llama-bench binary: its tg joins the table")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="rendered prompt (special tokens allowed)")
    p.add_argument("--sampling", action="store_true",
                   help="also time the engine with temperature/top-k/top-p/min-p/repeat-penalty sampling")
    args = benchlib.parse_args(p, argv)
    args.model = benchlib.find_models(args.model)[0]

    import llama_cpp

    from localchat.engine import EngineClient
    from localchat.engine.llama.model import physical_cores, plan_offload
    from localchat.types import LoadOptions, SamplingParams

    args.threads = args.threads or physical_cores()
    if args.n_ctx is None:  # what llama-bench's tg -d PROMPT gets: n_ctx = depth + tokens, padded to 256
        vocab = llama_cpp.Llama(str(args.model), vocab_only=True, verbose=False)
        n_prompt = len(vocab.tokenize(args.prompt.encode(), add_bos=True, special=True))
        args.n_ctx = -(-(n_prompt + args.tokens) // 256) * 256
    gpu_layers = -1 if args.gpu_layers == "all" else args.gpu_layers if args.gpu_layers == "auto" else int(args.gpu_layers)
    args.llama_gpu_layers = plan_offload(gpu_layers, bool(llama_cpp.llama_supports_gpu_offload())).n_gpu_layers
    greedy = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=args.tokens)
    sampled = SamplingParams(temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1,
                             max_tokens=args.tokens, seed=1234)
    log_dir = Path(tempfile.mkdtemp(prefix="localchat-bench-"))
    print(f"model {args.model.name}  threads {args.threads}  tokens {args.tokens}  repeats {args.repeat}  "
          f"n_ctx {args.n_ctx}  flash_attn {args.flash_attn}  gpu layers {args.gpu_layers} -> {args.llama_gpu_layers}")
    tg_default = TgLoop(args)  # loaded before avoid_amx(): llama.cpp's default weight buffers, as llama-bench uses
    llama = LlamaRuns(args)  # calls avoid_amx()
    tg = TgLoop(args) if llama.amx_note else tg_default
    tg_amx = tg_default if llama.amx_note else None
    args.depth = tg.depth = len(llama.tokens)
    if tg_amx is not None:
        tg_amx.depth = args.depth
    options = LoadOptions(n_ctx=args.n_ctx, n_threads=args.threads, n_batch=args.n_batch, flash_attn=args.flash_attn,
                          n_gpu_layers=gpu_layers)
    rows: dict[str, list[float]] = {"tg": [], "tg-amx": [], "bare": [], "stream": [], "engine": [], "native": [], "worker": []}
    extra: dict[str, list[float]] = {"sampled": [], "ttft": []}
    with EngineClient.start(args.model, options, log_dir) as client:
        # warm-up: first runs pay for page faults and the prompt (both caches keep it afterwards)
        n_tokens = llama.bare()["tokens"]
        llama.stream()
        engine_run(client, args, greedy)
        for _ in range(args.repeat):
            rows["tg"].append(tg.run())
            if tg_amx is not None:
                rows["tg-amx"].append(tg_amx.run())
            b = llama.bare()
            rows["bare"].append(b["rate"])
            rows["native"].append(b["native"])
            time.sleep(0.2)  # let the other process's threads go idle
            rows["stream"].append(llama.stream_rate(n_tokens))
            time.sleep(0.2)
            e = engine_run(client, args, greedy)
            if e["tokens"] != n_tokens:
                print(f"warning: engine produced {e['tokens']} tokens, the bare loop {n_tokens}", file=sys.stderr)
            rows["engine"].append(e["rate"])
            rows["worker"].append(e["worker_rate"])
            extra["ttft"].append(e["ttft"])
            if args.sampling:
                extra["sampled"].append(engine_run(client, args, sampled)["rate"])
            time.sleep(0.2)
    if args.native:
        native = llama_bench(args, args.depth)
        rows["llama-bench-d0"], rows["llama-bench"] = [native[0]], [native[args.depth]]
    figures = report(args, rows, extra, n_tokens)
    benchlib.emit(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
