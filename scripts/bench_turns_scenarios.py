"""The chat scenarios of issue 15 on a hybrid model, localchat beside llama-cpp-python in one run.

    scripts/bench turns --scenarios [MODEL.gguf] [--shape qwen3.5-0.8b] [--turns 10] [--reply-tokens 32]
                        [--threads N] [--native PATH/TO/llama-bench] [--no-llama-cpp-python] [--repeats N]

Without a model file, the `--shape` model is generated (random weights, scripts/gen_shaped_gguf.py) into
~/.cache/localchat-bench/models. The template is Qwen3.5-style (tests/support/thinking_templates.PRE_OPENED:
the generation prompt opens "<think>", the history drops old thoughts). Random weights say nothing useful,
so after each turn the history gets a fixed thought and answer in place of what the model generated (as a
reasoning model's would be: the next prompt renders the reply without its thought).

Scenarios, each a conversation of --turns turns:
  next turn   turn after turn                  regenerate  the last reply again, after the last turn
  edit        the last message edited          alternate   two conversations, a turn in each in turn
Printed for each: TTFT of the last turn / turn 1 (target <= 1.3) and tokens evaluated / new tokens at the
last turn (target <= 1.1; new: the prompt's tokens past what it shares as text with the conversation's
previous prompt; for regenerate none are new: evaluated tokens are printed), for localchat and for
llama-cpp-python's create_chat_completion on the same model, same template, same threads. Then decode:
localchat's tokens/s at the last turns beside llama-bench tg at the same depth (target >= 95%).
TTFT is wall time from the call to the first streamed event (render, tokenize and prompt evaluation).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402

DEFAULT_NATIVE = Path.home() / ".cache" / "localchat-bench" / "build-0.3.36" / "bin" / "llama-bench"
SYSTEM = "You are a helpful assistant. Answer briefly."


def user_message(i: int, conv: str = "A") -> str:
    return f"[{conv}] Question {i + 1}: why is the sky blue at noon but red at sunset, in one line?"


def thought(i: int) -> str:
    return f"Rayleigh scattering, turn {i + 1}: short wavelengths scatter more."


def answer(i: int) -> str:
    return f"Answer {i + 1}: blue light scatters most; at sunset the long path leaves the red."


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def shaped_model(shape: str) -> Path:
    out = Path.home() / ".cache" / "localchat-bench" / "models" / f"{shape}-f16.gguf"
    if not out.is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_shaped_gguf.py"), shape, str(out)], check=True)
    return out


class Local:
    """localchat: ChatSession over a worker."""

    name = "localchat"

    def __init__(self, path: Path, args) -> None:
        from localchat.engine import EngineClient
        from localchat.template_sandbox import SandboxedTemplate
        from localchat.types import LoadOptions, SamplingParams
        from tests.support.thinking_templates import PRE_OPENED

        self.client = EngineClient.start(path, LoadOptions(n_ctx=args.n_ctx, n_threads=args.threads),
                                         Path(tempfile.mkdtemp(prefix="localchat-bench-turns-")))
        self.template = SandboxedTemplate(PRE_OPENED)
        self.sampling = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=args.reply_tokens)
        list(self.client.generate("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", self.sampling))

    def conversation(self, conv: str):
        from localchat.chat import ChatSession
        from localchat.types import Message

        client, session = self.client, ChatSession(self.client, self.template, model_id="bench",
                                                   sampling=self.sampling, system=f"{SYSTEM} ({conv})")
        previous: list[str] = []

        def run(kind: str, i: int) -> dict:
            t0 = time.perf_counter()
            turn = (session.regenerate() if kind == "regenerate" else
                    session.edit_last(user_message(i, conv) + " (edited)") if kind == "edit" else
                    session.send(user_message(i, conv)))
            first = None
            for _ in turn:
                first = first or time.perf_counter()
            ttft = ((first or time.perf_counter()) - t0) * 1000
            while session.messages and session.messages[-1].role == "assistant":
                session.messages.pop()
            session.messages.append(Message("assistant", answer(i), reasoning=thought(i)))
            prompt, u = turn.plan.prompt, turn.usage
            assert isinstance(prompt, str) and u is not None
            if kind == "edit" and turn.plan.starts:
                new = client.count_tokens([prompt[turn.plan.starts[0]:]])[0]
            elif kind == "regenerate":
                new = 0
            else:
                new = client.count_tokens([prompt[_common(previous[-1], prompt):]])[0] if previous else u.prompt_tokens
            previous.append(prompt)
            return {"prompt": u.prompt_tokens, "evaluated": u.prompt_eval_tokens, "new": new, "ttft_ms": ttft,
                    "tps": u.tokens_per_second}

        return run

    def close(self) -> None:
        self.client.close()


class LlamaCppPython:
    """llama-cpp-python's high-level API: create_chat_completion with the same template."""

    name = "llama-cpp-python"

    def __init__(self, path: Path, args) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from tests.support.thinking_templates import PRE_OPENED

        handler = Jinja2ChatFormatter(PRE_OPENED, eos_token="<|im_end|>", bos_token="<|endoftext|>").to_chat_handler()
        threads = args.threads or benchlib_threads()
        self.llm = Llama(model_path=str(path), n_ctx=args.n_ctx, n_threads=threads, n_threads_batch=threads,
                         chat_handler=handler, verbose=False)
        self.reply_tokens = args.reply_tokens
        self.first_eval: list[tuple[int, int]] = []  # (tokens in the cache before, tokens evaluated) per request
        original = self.llm.eval

        def eval_counting(tokens):
            if self._counting:
                self.first_eval.append((self.llm.n_tokens, len(tokens)))
                self._counting = False
            return original(tokens)

        self._counting = False
        self.llm.eval = eval_counting  # type: ignore[method-assign]

    def conversation(self, conv: str):
        messages: list[dict] = [{"role": "system", "content": f"{SYSTEM} ({conv})"}]

        def run(kind: str, i: int) -> dict:
            if kind != "send":  # regenerate, edit: the last reply goes
                messages.pop()
            if kind == "edit":
                messages[-1] = {"role": "user", "content": user_message(i, conv) + " (edited)"}
            elif kind == "send":
                messages.append({"role": "user", "content": user_message(i, conv)})
            self._counting = True
            t0 = time.perf_counter()
            first = None
            for _ in self.llm.create_chat_completion(messages=list(messages), max_tokens=self.reply_tokens,
                                                     temperature=0.0, repeat_penalty=1.0, stream=True):
                first = first or time.perf_counter()
            ttft = ((first or time.perf_counter()) - t0) * 1000
            before, evaluated = self.first_eval[-1] if not self._counting else (0, 0)
            messages.append({"role": "assistant", "content": answer(i), "reasoning_content": thought(i)})
            return {"prompt": before + evaluated, "evaluated": evaluated, "ttft_ms": ttft}

        return run

    def close(self) -> None:
        self.llm.close()


def benchlib_threads() -> int:
    from localchat.engine.llama.model import physical_cores  # imports llama_cpp: only for this bench

    return physical_cores()


def run_scenarios(engine, turns: int, tag: str = "") -> dict:
    out: dict[str, list[dict]] = {}
    run = engine.conversation("A" + tag)
    out["next turn"] = [run("send", i) for i in range(turns)]
    out["regenerate"] = [out["next turn"][0], run("regenerate", turns - 1)]
    out["edit"] = [out["next turn"][0], run("edit", turns - 1)]
    a, b = engine.conversation("B" + tag), engine.conversation("C" + tag)
    rows_a, rows_b = [], []
    for i in range(turns):
        rows_a.append(a("send", i))
        rows_b.append(b("send", i))
    out["alternate"] = rows_a
    out["alternate (2nd)"] = rows_b
    return out


def llama_bench(native: Path, model: Path, threads: int, tokens: int, depth: int) -> float | None:
    cmd = [str(native), "-m", str(model), "-p", "0", "-n", str(tokens), "-t", str(threads), "-ngl", "0",
           "-d", str(depth), "-fa", "0", "-r", "3", "-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"llama-bench failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    runs = [r for r in json.loads(done.stdout) if r.get("n_gen") == tokens and not r.get("n_prompt")]
    return float(runs[0]["avg_ts"]) if runs else None


def report(results: dict[str, list[dict]], new_of: dict[str, list[dict]]) -> dict:
    """One line per scenario and engine; with repeats, the TTFT figures are medians over them (evaluated
    tokens are the same in every repeat)."""
    print(f"\n{'scenario':<16}{'engine':<18}{'TTFT last/1':>12}{'last TTFT ms':>13}{'evaluated':>10}{'new':>6}"
          f"{'eval/new':>9}   targets: TTFT <= 1.3x, evaluated <= 1.1x new")
    summary: dict = {}
    for scenario, rows in new_of.items():
        new = rows[-1]["new"]
        for engine, repeats in results.items():
            ratios = [rep[scenario][-1]["ttft_ms"] / rep[scenario][0]["ttft_ms"] for rep in repeats]
            ratio, last_ms = benchlib.median(ratios), benchlib.median(rep[scenario][-1]["ttft_ms"] for rep in repeats)
            r = repeats[0][scenario]
            ev = r[-1]["evaluated"]
            per_new = f"{ev / new:>9.2f}" if new else f"{'-':>9}"
            spread = f"   (runs: {', '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ""
            print(f"{scenario:<16}{engine:<18}{ratio:>12.2f}{last_ms:>13.1f}{ev:>10}{new:>6}{per_new}{spread}")
            summary.setdefault(scenario, {})[engine] = {"ttft_ratio": ratio, "ttft_ratios": ratios, "evaluated": ev,
                                                        "new": new, "ttft_ms": [x["ttft_ms"] for x in r],
                                                        "evaluated_by_turn": [x["evaluated"] for x in r]}
    return summary


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser("scripts/bench turns --scenarios", __doc__.split("\n")[0])
    p.add_argument("--scenarios", action="store_true")
    p.add_argument("models", type=Path, nargs="*", metavar="MODEL", help="a .gguf file (default: the --shape model)")
    p.add_argument("--shape", default="qwen3.5-0.8b", help="gen_shaped_gguf shape when no model is given")
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--reply-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-ctx", type=int, default=8192)
    p.add_argument("--native", type=Path, default=DEFAULT_NATIVE, help="llama-bench for the decode comparison")
    p.add_argument("--no-llama-cpp-python", action="store_true")
    p.add_argument("--repeats", type=int, default=1, help="whole runs per engine; TTFT ratios are their medians")
    args = benchlib.parse_args(p, argv)
    path = args.models[0] if args.models else shaped_model(args.shape)
    results: dict[str, dict] = {}
    engines = [Local] + ([] if args.no_llama_cpp_python else [LlamaCppPython])
    threads = 0
    for cls in engines:
        for repeat in range(args.repeats):  # a fresh engine each time: nothing cached from the repeat before
            engine = cls(path, args)
            try:
                results.setdefault(cls.name, []).append(run_scenarios(engine, args.turns, f"{repeat}" if repeat else ""))
                if isinstance(engine, Local):
                    threads = engine.client.info.n_threads
            finally:
                engine.close()
    print(f"{path.name}: {args.turns} turns, replies of {args.reply_tokens} tokens, {threads} threads, "
          f"Qwen3.5-style template, {args.repeats} repeat{'s' if args.repeats != 1 else ''}")
    summary = report(results, results["localchat"][0])
    local = results["localchat"][0]
    last = [local["next turn"][-1], local["alternate"][-1], local["alternate (2nd)"][-1]]
    tps = benchlib.median(r["tps"] for r in last)
    depth = int(benchlib.median(r["prompt"] for r in last))
    summary["decode"] = {"localchat_tps": tps, "depth": depth}
    line = f"decode at depth ~{depth}: localchat {tps:.1f} tok/s (median of the last turns)"
    if args.native.is_file():
        native = llama_bench(args.native, path, threads, args.reply_tokens, depth)
        if native:
            summary["decode"]["llama_bench_tg"] = native
            line += f"; llama-bench tg{args.reply_tokens} -d {depth}: {native:.1f} tok/s; ratio {tps / native:.1%} (target >= 95%)"
    else:
        line += f" (no llama-bench at {args.native})"
    print(line)
    benchlib.emit(args, summary)
    return 0
