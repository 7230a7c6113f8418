"""Time to first token by turn in a long conversation: turn N evaluates only its new message.

    scripts/bench turns --scenarios ...   (chat scenarios on a hybrid model: see scripts/bench_turns_scenarios.py)
    scripts/bench turns [MODEL.gguf ...] [--turns 10] [--repeats 3] [--threads N] [--n-ctx 8192]
                        [--template smollm2|qwen|chatml] [--json [OUT.json]]

Without models: $LOCALCHAT_BENCH_MODEL, else the test cache's models (scripts/benchlib.py).

Drives ChatSession over a real EngineClient (worker process), greedy replies of --reply-tokens tokens,
each user message the same length (about 60 tokens); the last turn sends turn 1's message again. Prints per
turn: prompt tokens, tokens actually evaluated (the engine's Usage.prompt_eval_tokens) and TTFT (median over
--repeats conversations, each opened with its own system prompt so that its turn 1 cannot reuse the
previous conversation's cache), then TTFT of the last turn / turn 1 (target <= 1.3: turn 1 evaluates its
system prompt and message, turn 10 only its message, yet attends over the whole conversation). The
template is guessed from the file name unless given.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402

TOPICS = ["rivers", "mountains", "deserts", "forests", "oceans", "glaciers", "volcanoes", "islands", "lakes", "caves",
          "canyons", "reefs", "swamps", "plains", "fjords", "dunes"]


def user_message(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (f"Question {i + 1}: tell me about {topic}. I am writing a long essay about the geography of the "
            f"world and I want to understand how {topic} form, where the largest ones are, and why they "
            "matter to the people who live near them. Please answer in two sentences.")


def guess_template(path: Path) -> str:
    name = path.name.lower()
    return "qwen" if "qwen" in name else "smollm2" if "smollm" in name else "chatml"


def run_model(path: Path, args) -> dict:
    from localchat.chat import ChatSession
    from localchat.engine import EngineClient
    from localchat.templates import native
    from localchat.types import LoadOptions, SamplingParams

    options = LoadOptions(n_ctx=args.n_ctx, n_threads=args.threads)
    log_dir = Path(tempfile.mkdtemp(prefix="localchat-bench-turns-"))
    sampling = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=args.reply_tokens)
    runs: list[list[dict]] = []
    with EngineClient.start(path, options, log_dir) as client:
        warm = client.generate("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", sampling)
        list(warm)  # page faults and first-call costs out of turn 1
        for r in range(args.repeats):
            system = f"Conversation {r + 1}. You are a helpful assistant who answers questions about geography."
            session = ChatSession(client, native(args.template or guess_template(path)), model_id=path.stem,
                                  sampling=sampling, system=system)
            turns = []
            for i in range(args.turns):
                turn = session.send(user_message(i if i < args.turns - 1 else 0))
                turn.run()
                u = turn.usage
                turns.append({"turn": i + 1, "prompt_tokens": u.prompt_tokens, "evaluated": u.prompt_eval_tokens,
                              "ttft_ms": u.ttft * 1000, "reply_tokens": u.completion_tokens,
                              "tokens_per_second": u.tokens_per_second, "dropped": session.dropped})
            runs.append(turns)
    turns = [dict(t, ttft_ms=benchlib.median(run[i]["ttft_ms"] for run in runs),
                  ttft_ms_runs=[run[i]["ttft_ms"] for run in runs],
                  tokens_per_second=benchlib.median(run[i]["tokens_per_second"] for run in runs))
             for i, t in enumerate(runs[0])]
    return {"model": path.name, "threads": client.info.n_threads, "n_ctx": client.info.n_ctx, "turns": turns,
            "repeats": args.repeats,
            "ttft_ratio": turns[-1]["ttft_ms"] / turns[0]["ttft_ms"] if turns[0]["ttft_ms"] else 0.0}


def main(argv: list[str] | None = None) -> int:
    if "--scenarios" in (sys.argv[1:] if argv is None else argv):  # issue 15: hybrid model, beside llama-cpp-python
        import bench_turns_scenarios

        return bench_turns_scenarios.main(argv)
    p = benchlib.parser("scripts/bench turns", __doc__.split("\n")[0])
    p.add_argument("models", type=Path, nargs="*", metavar="MODEL", help=".gguf files")
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="conversations per model; TTFT is the median (default 3)")
    p.add_argument("--reply-tokens", type=int, default=64, help="greedy reply length cap per turn (default 64)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--n-ctx", type=int, default=8192)
    p.add_argument("--template", choices=["smollm2", "qwen", "chatml"], help="default: guessed from the file name")
    args = benchlib.parse_args(p, argv)
    args.models = benchlib.find_models(args.models, count=len(benchlib.TEST_MODELS))
    results = []
    for path in args.models:
        r = run_model(path, args)
        results.append(r)
        print(f"\n{r['model']}  threads {r['threads']}  n_ctx {r['n_ctx']}  (median of {r['repeats']} conversations)")
        print(f"{'turn':>4} {'prompt':>7} {'evaluated':>9} {'TTFT ms':>8} {'reply':>5} {'tok/s':>6}  TTFT of each conversation")
        for t in r["turns"]:
            each = " ".join(f"{v:.1f}" for v in t["ttft_ms_runs"])
            print(f"{t['turn']:>4} {t['prompt_tokens']:>7} {t['evaluated']:>9} {t['ttft_ms']:>8.1f} "
                  f"{t['reply_tokens']:>5} {t['tokens_per_second']:>6.1f}  {each}")
        if any(t["dropped"] for t in r["turns"]):
            print("note: older turns were dropped to fit n_ctx; raise --n-ctx")
        verdict = "ok" if r["ttft_ratio"] <= 1.3 else "over the 1.3 target"
        print(f"TTFT turn {len(r['turns'])} / turn 1: {r['ttft_ratio']:.2f} ({verdict})")
    benchlib.emit(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
