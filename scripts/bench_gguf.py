"""The GGUF check and chat-template rendering, timed on real files.

    scripts/bench gguf [FILE.gguf ...] [--runs N] [--json [PATH]]

For each file (default: $LOCALCHAT_BENCH_MODEL, else the test models in the test cache, as fetched by
../shared/scripts/fetch-test-models: scripts/benchlib.py): localchat's bounded reader next to the gguf package's own reader
(numpy memmap, no bounds policy), median of --runs with the page cache warm; then the file's chat template
rendered for a 20-turn conversation by the native renderer (where one matches), by localchat's budgeted
sandbox, and by plain sandboxed Jinja as Hugging Face transformers renders it. Target: reading the
151k-token Qwen2.5-Coder file well under 0.2 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402
from localchat.gguf import read_gguf  # noqa: E402
from localchat.templates import NATIVE, from_gguf  # noqa: E402


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return benchlib.median(times)


def fresh_process_seconds(path: Path) -> float:
    """read_gguf in a new interpreter (imports included), as `localchat import` would run it."""
    code = ("import time; t = time.perf_counter(); from localchat.gguf import read_gguf; "
            f"read_gguf({str(path)!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return float(out.stdout)


def bench_reader(path: Path, runs: int) -> dict:
    import gguf

    info = read_gguf(path)
    ours = median_seconds(lambda: read_gguf(path), runs)
    fresh = benchlib.median(fresh_process_seconds(path) for _ in range(3))
    theirs = median_seconds(lambda: gguf.GGUFReader(str(path)), max(1, runs // 5))
    vocab = len(info.metadata.get("tokenizer.ggml.tokens", []))
    print(f"{path.name}: {info.file_size / 1e6:.0f} MB, metadata {info.data_offset / 1e6:.1f} MB, "
          f"{len(info.metadata)} keys, {vocab:,} tokens, {len(info.tensors)} tensors")
    print(f"  read_gguf (localchat)        {ours * 1000:8.1f} ms   (in a fresh process, imports included: "
          f"{fresh * 1000:.1f} ms)")
    print(f"  gguf.GGUFReader (reference)  {theirs * 1000:8.1f} ms   ratio ours/reference {ours / theirs:.3f}")
    return {"read_gguf_s": ours, "read_gguf_fresh_process_s": fresh, "gguf_reader_s": theirs}


def bench_template(path: Path, runs: int) -> dict:
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    info = read_gguf(path)
    if not info.chat_template:
        print("  (no chat template)")
        return {}
    conversation = [{"role": "system", "content": "You are terse."}]
    for i in range(20):
        conversation += [{"role": "user", "content": f"Question {i}: what is {i} squared? 你好"},
                         {"role": "assistant", "content": f"{i * i}. " + "Some explanation. " * 10}]
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    plain_template = plain.from_string(info.chat_template)
    sandboxed = from_gguf(info.chat_template, info.bos_token, info.eos_token)
    expected = plain_template.render(messages=conversation, add_generation_prompt=True)
    no_system = conversation[1:]
    expected_no_system = plain_template.render(messages=no_system, add_generation_prompt=True)
    native = next((t for t in NATIVE.values()
                   if t.render(conversation) == expected and t.render(no_system) == expected_no_system), None)
    assert sandboxed.render(conversation) == expected
    jinja = median_seconds(lambda: plain_template.render(messages=conversation, add_generation_prompt=True), runs)
    ours = median_seconds(lambda: sandboxed.render(conversation), runs)
    print(f"  chat template, 41 messages: plain Jinja sandbox {jinja * 1e6:7.0f} us, localchat sandbox "
          f"{ours * 1e6:7.0f} us (x{ours / jinja:.2f})", end="")
    if native is not None:
        ns = median_seconds(lambda: native.render(conversation), runs)
        print(f", native '{native.name}' {ns * 1e6:5.0f} us (x{ns / jinja:.3f}, byte-identical)")
        return {"jinja_s": jinja, "sandbox_s": ours, "native": native.name, "native_s": ns}
    print(" (no native renderer matches this template)")
    return {"jinja_s": jinja, "sandbox_s": ours}


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.parser("scripts/bench gguf", __doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    args = benchlib.parse_args(parser, argv)
    figures = {}
    for path in benchlib.find_models(args.files, count=len(benchlib.TEST_MODELS)):
        figures[path.name] = {"reader": bench_reader(path, args.runs), "template": bench_template(path, args.runs)}
    benchlib.emit(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
