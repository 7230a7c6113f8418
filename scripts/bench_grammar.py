"""Decode speed of a grammar-constrained reply next to an unconstrained one, on the same model and prompt.

    scripts/bench grammar [--model MODEL.gguf] [--tokens 128] [--repeat 3] [--threads N]
                          [--gpu-layers auto|N] [--json [OUT.json]]

MODEL defaults to $LOCALCHAT_BENCH_MODEL, else the test cache's SmolLM2 (scripts/benchlib.py).

Through the real path (worker process + pipe + EngineClient), the same rendered prompt each time, repeats
interleaved (free, json_schema, json_object, free, ...), for greedy decoding and for the default sampling
(temperature 0.7, top_k 40, top_p 0.95, min_p 0.05). The schema's essay has a minLength, so a constrained
reply runs as long as a free one (decode cost grows with depth; lengths are printed); json_object cannot
be made to run long (the model closes the object when it likes), so it is shown but not judged. Rate =
Usage.tokens_per_second (tokens after the first over the time from the first to the last); the figure is
the median of the repeats. "cost" is what the grammar adds per token: 1/constrained - 1/free, in ms;
"ttft +" is what it adds before the first token (compiling the grammar, in ms). Target (DESIGN.md):
json_schema >= 90% of free.

`measure(model, ...)` returns the figures, so another bench (scripts/bench serve) can call it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's localchat, also for the worker it starts

import benchlib  # noqa: E402

PROMPT = ("<|im_start|>system\nYou are a helpful assistant. Answer in JSON.<|im_end|>\n<|im_start|>user\n"
          "Write a long, detailed essay about the history of the Roman Empire, from its founding to its fall, "
          "as {\"title\": ..., \"essay\": ...}.<|im_end|>\n<|im_start|>assistant\n")
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["title", "essay"],
          "properties": {"title": {"type": "string", "maxLength": 80}, "essay": {"type": "string", "minLength": 600}}}
TARGET = 0.90


def measure(model: Path, tokens: int = 128, repeat: int = 3, threads: int | None = None,
            gpu_layers: int | str = "auto") -> dict:
    from localchat.engine.api import answer_text
    from localchat.engine.client import EngineClient
    from localchat.structured import OutputConstraint, schema_constraint
    from localchat.types import LoadOptions, SamplingParams

    constraints = {"free": None, "json_schema": schema_constraint(SCHEMA).to_dict(),
                   "json_object": OutputConstraint("json").to_dict()}
    modes = {"greedy": SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=tokens),
             "sampled": SamplingParams(max_tokens=tokens, seed=1)}
    options = LoadOptions(n_ctx=2048, n_threads=threads, n_gpu_layers=gpu_layers, parallel=1)
    runs: dict[str, dict[str, list[tuple[float, int, float]]]] = {m: {c: [] for c in constraints} for m in modes}
    with tempfile.TemporaryDirectory() as logs, EngineClient.start(model, options, Path(logs)) as engine:
        for mode, base in modes.items():
            for _ in range(repeat + 1):  # the first round warms up (page cache, grammar code paths)
                for name, grammar in constraints.items():
                    generation = engine.generate(PROMPT, _with(base, grammar))
                    answer_text(generation)
                    usage = generation.usage
                    assert usage is not None
                    runs[mode][name].append((usage.tokens_per_second, usage.completion_tokens, usage.ttft))
    figures: dict = {"model": model.name, "tokens": tokens, "repeat": repeat, "target": TARGET, "modes": {}}
    for mode, by_name in runs.items():
        free = benchlib.median(r for r, _, _ in by_name["free"][1:])
        free_ttft = benchlib.median(t for _, _, t in by_name["free"][1:])
        row = {"free_tps": free, "free_tokens": benchlib.median(n for _, n, _ in by_name["free"][1:])}
        for name in ("json_schema", "json_object"):
            rate = benchlib.median(r for r, _, _ in by_name[name][1:])
            row[name] = {"tps": rate, "ratio": rate / free if free else 0.0,
                         "cost_ms": (1 / rate - 1 / free) * 1000 if rate and free else float("nan"),
                         "ttft_extra_ms": (benchlib.median(t for _, _, t in by_name[name][1:]) - free_ttft) * 1000,
                         "tokens": benchlib.median(n for _, n, _ in by_name[name][1:])}
        figures["modes"][mode] = row
    return figures


def _with(sampling, grammar):
    from dataclasses import replace

    return replace(sampling, grammar=grammar)


def report(figures: dict) -> None:
    print(f"grammar-constrained decoding, {figures['model']}, up to {figures['tokens']} tokens, "
          f"median of {figures['repeat']} (target: json_schema >= {figures['target']:.0%} of free)")
    print(f"{'sampling':<9} {'free tok/s':>10} {'(tok)':>6}  {'output':<12} {'tok/s':>8} {'(tok)':>6} "
          f"{'ratio':>6} {'cost ms/tok':>12} {'ttft + ms':>10}  verdict")
    for mode, row in figures["modes"].items():
        for name in ("json_schema", "json_object"):
            r = row[name]
            verdict = ("ok" if r["ratio"] >= figures["target"] else "BELOW TARGET") if name == "json_schema" else "(shown)"
            print(f"{mode:<9} {row['free_tps']:>10.1f} {row['free_tokens']:>6.0f}  {name:<12} {r['tps']:>8.1f} "
                  f"{r['tokens']:>6.0f} {r['ratio']:>6.3f} {r['cost_ms']:>12.3f} {r['ttft_extra_ms']:>10.1f}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser("scripts/bench grammar", __doc__, raw=True)
    benchlib.add_model(p)
    p.add_argument("--tokens", type=int, default=128, help="tokens per reply (default: 128)")
    p.add_argument("--repeat", type=int, default=3, help="measured rounds after one warm-up (default: 3)")
    p.add_argument("--threads", type=int, help="llama.cpp threads (default: localchat's automatic choice)")
    p.add_argument("--gpu-layers", default="auto", help="auto, or a number of layers (0: CPU only)")
    args = benchlib.parse_args(p, argv)
    (model,) = benchlib.find_models(args.model, prefer="smollm2")
    layers = args.gpu_layers if args.gpu_layers == "auto" else int(args.gpu_layers)
    figures = measure(model, args.tokens, args.repeat, args.threads, layers)
    report(figures)
    benchlib.emit(args, figures)
    ok = all(row["json_schema"]["ratio"] >= TARGET for row in figures["modes"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
