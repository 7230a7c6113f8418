"""Fuzz localchat's parsers of untrusted input and count what happened to each input.

    scripts/fuzz [-n N] [--seed S] [--smollm2 PATH] [--save DIR] [TARGET ...]     (scripts/fuzz --list)

For each target it prints how many inputs were tried, how many were refused with the error meant for
users (GGUFError, TemplateError), how many were accepted (parsed, rendered, loaded ...), and how many crashed:
any other exception, or no result within the hang guard. Exit status 1 if anything crashed. The `load`
target also counts refused-load (llama.cpp refused the file in the worker) and crashed-worker (the worker
died with a WorkerCrashed message; the fuzzing process went on): those are outcomes, not crashes.

A target is an input generator plus a runner that returns an outcome label; add one with @target. The
GGUF inputs are structure-aware mutations (tests/support/ggufmutate.py) of a valid file, so the same
generators can drive a runner that loads each input in an engine worker.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localchat.errors import GGUFError, TemplateError  # noqa: E402
from tests.support import ggufmutate as gm  # noqa: E402
from tests.support.loadcase import load_inputs  # noqa: E402


class Skip(Exception):
    """A target that cannot run here (e.g. its input file is missing)."""


@dataclass
class Target:
    name: str
    about: str
    accepted: str  # the label of a good outcome: parsed, rendered, loaded, ...
    inputs: Callable[[random.Random, int, argparse.Namespace], Iterator[Any]]
    run: Callable[[Any], str]  # returns an outcome label; raising anything is a crash
    default_n: int | None = None  # inputs when -n is not given (slow targets run fewer)


TARGETS: dict[str, Target] = {}


def target(name: str, about: str, accepted: str, inputs: Callable, default_n: int | None = None) -> Callable:
    def register(run: Callable[[Any], str]) -> Callable[[Any], str]:
        TARGETS[name] = Target(name, about, accepted, inputs, run, default_n)
        return run

    return register


# -- inputs

def mutations_of(base: bytes, file_size: int | None = None) -> Callable:
    """Inputs: (bytes, claimed file size) made by 1..4 random structure-aware mutations of `base`."""

    def generate(rng: random.Random, n: int, args: argparse.Namespace) -> Iterator[tuple[bytes, int | None]]:
        lay = gm.layout(base)
        for _ in range(n):
            data = gm.apply(base, lay, gm.random_mutations(rng))
            yield data, (None if file_size is None else max(file_size, len(data)))

    return generate


def lazy(make_generator: Callable[[argparse.Namespace], Callable]) -> Callable:
    return lambda rng, n, args: make_generator(args)(rng, n, args)


def random_bytes(rng: random.Random, n: int, args: argparse.Namespace) -> Iterator[tuple[bytes, None]]:
    for i in range(n):
        body = rng.randbytes(rng.randint(0, 512))
        yield (b"GGUF" + (3).to_bytes(4, "little") + body if i % 2 else body), None


def smollm2_header(args: argparse.Namespace) -> Callable:
    """The real SmolLM2 file's header, metadata and tensor table (its 49k-token vocabulary included)."""
    from localchat.gguf import read_gguf

    cache = Path(os.environ.get("LOCALCHAT_TEST_CACHE", Path.home() / ".cache" / "localchat-tests"))
    path = Path(args.smollm2) if args.smollm2 else cache / "smollm2-135m-instruct-q4_1.gguf"
    if not path.is_file():
        raise Skip(f"{path} not found (pass --smollm2 PATH, or run ../shared/scripts/fetch-test-models {cache})")
    info = read_gguf(path)
    with open(path, "rb") as f:
        head = f.read(info.data_offset)
    return mutations_of(head, file_size=info.file_size)


SNIPPETS = ["{{ ", " }}", "{% ", " %}", "for ", "if ", "endfor", "endif", "set ", "macro ", "endmacro", "in ",
            "messages", "m", "loop", ".index", ".content", "['role']", "[0]", "(", ")", "|", "upper", "join",
            "replace", "tojson", "~", "+", "*", "**", "%", "'a'", "'%s'", "1", "99999", "range", "namespace",
            "cycler", "lipsum", "raise_exception", "__class__", "__globals__", "__init__", ".", ",", "=", "\n"]


def template_sources(rng: random.Random, n: int, args: argparse.Namespace) -> Iterator[str]:
    for _ in range(n):
        yield "".join(rng.choice(SNIPPETS) for _ in range(rng.randint(1, 30)))


# -- targets

def parse_gguf(item: tuple[bytes, int | None]) -> str:
    from localchat.gguf import parse_gguf_bytes

    data, size = item
    try:
        parse_gguf_bytes(data, "fuzz.gguf", size)
    except GGUFError as e:
        if "internal error" in e.message:  # our safety net caught a bug: count it as a crash
            raise AssertionError(e.message) from e
        return "refused"
    return "parsed"


target("gguf-bytes", "random bytes (half after a GGUF v3 header) through the GGUF reader", "parsed",
       random_bytes)(parse_gguf)
target("gguf-tiny", "mutations of a tiny model written by the gguf package", "parsed",
       lazy(lambda args: mutations_of(gm.tiny_gguf_bytes())))(parse_gguf)
target("gguf-crafted", "mutations of a crafted file (every value type, nested arrays)", "parsed",
       lazy(lambda args: mutations_of(gm.crafted_gguf_bytes())))(parse_gguf)
target("gguf-smollm2", "mutations of the real SmolLM2 header (1.8 MB of metadata)", "parsed",
       lazy(smollm2_header))(parse_gguf)


@target("chat-template", "random Jinja templates rendered in the sandbox", "rendered", template_sources)
def render_template(source: str) -> str:
    from localchat.template_sandbox import RenderLimits, SandboxedTemplate

    try:
        SandboxedTemplate(source, limits=RenderLimits(max_seconds=5)).render(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    except TemplateError:
        return "refused"
    return "rendered"


_LOAD_DIR: list[Path] = []


@target("load", "mutations of a tiny model through the whole load path: read_gguf, then an engine worker loads "
        "and runs the ones it passes", "loaded", lambda rng, n, args: load_inputs(rng, n), default_n=200)
def load_in_worker(item: tuple[bytes, int | None]) -> str:
    """refused (by our reader), refused-load (by llama.cpp), crashed-worker (the worker died, the parent
    carries on) or loaded; anything else raised here is a crash of the parent's side."""
    import atexit
    import shutil
    import tempfile

    from tests.support.loadcase import load_outcome

    if not _LOAD_DIR:
        _LOAD_DIR.append(Path(tempfile.mkdtemp(prefix="localchat-fuzz-load-")))
        atexit.register(shutil.rmtree, _LOAD_DIR[0], True)
    return load_outcome(item[0], _LOAD_DIR[0]).outcome


# -- the run

def fuzz(t: Target, n: int, seed: int, args: argparse.Namespace) -> tuple[collections.Counter, float]:
    counts: collections.Counter = collections.Counter()
    rng = random.Random(f"{seed}:{t.name}")
    started = time.perf_counter()
    for i, item in enumerate(t.inputs(rng, n, args)):
        try:
            with gm.hang_guard(args.hang_seconds):
                counts[t.run(item)] += 1
        except Exception as e:  # noqa: BLE001 - that is what we are counting
            counts["crashed"] += 1
            if counts["crashed"] <= 3:
                print(f"--- {t.name} input {i} crashed:\n{''.join(traceback.format_exception(e)).rstrip()}",
                      file=sys.stderr)
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                raw = item[0] if isinstance(item, tuple) else str(item).encode()
                (Path(args.save) / f"{t.name}-{seed}-{i}.bin").write_bytes(raw)
    return counts, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all that can run here)")
    parser.add_argument("-n", type=int, help="inputs per target (default 1000; load: 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smollm2", help="path of smollm2-135m-instruct-q4_1.gguf (default: the test cache)")
    parser.add_argument("--save", help="write each crashing input into this folder")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="an input still running after this crashed")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    args = parser.parse_args(argv)
    if args.list:
        for t in TARGETS.values():
            print(f"{t.name:15} {t.about}")
        return 0
    unknown = [name for name in args.targets if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    crashed = 0
    print(f"{'target':15} {'inputs':>7} {'refused':>8} {'accepted':>16} {'crashed':>8} {'seconds':>8}")
    for name in args.targets or list(TARGETS):
        t = TARGETS[name]
        try:
            counts, seconds = fuzz(t, args.n or t.default_n or 1000, args.seed, args)
        except Skip as why:
            print(f"{name:15} skipped: {why}")
            continue
        total = sum(counts.values())
        other = {k: v for k, v in counts.items() if k not in ("refused", t.accepted, "crashed")}
        accepted = f"{counts[t.accepted]} {t.accepted}"
        print(f"{name:15} {total:7} {counts['refused']:8} {accepted:>16} {counts['crashed']:8} {seconds:8.1f}"
              + (f"  {dict(other)}" if other else ""))
        crashed += counts["crashed"]
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
