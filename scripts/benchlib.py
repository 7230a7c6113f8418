"""What every scripts/bench_*.py shares: its argument parser (with --json), finding the model files, medians
and percentiles, and handing the figures over.

Models: a bench that needs one takes it as an argument (`--model PATH`, or positional paths); without one it
uses $LOCALCHAT_BENCH_MODEL (a path, or several joined by the path separator), else the real test models
where the tests keep them ($LOCALCHAT_TEST_SMOLLM2 / $LOCALCHAT_TEST_QWEN, else the test cache
$LOCALCHAT_TEST_CACHE or ~/.cache/localchat-tests, which ../shared/scripts/fetch-test-models fills).

--json: `--json` alone writes the figures as JSON on stdout, and everything the bench prints for people
(its own child processes included) goes to stderr instead; `--json PATH` writes them to PATH.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_ENV = "LOCALCHAT_BENCH_MODEL"
# The two real models the tests and benchmarks use, by the names fetch-test-models gives them.
TEST_MODELS = (("LOCALCHAT_TEST_SMOLLM2", "smollm2-135m-instruct-q4_1.gguf"),
               ("LOCALCHAT_TEST_QWEN", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))

_json_fd: int | None = None  # the real stdout while `--json` sends the printed tables to stderr


def parser(prog: str, doc: str | None, *, raw: bool = False) -> argparse.ArgumentParser:
    """An argument parser named `scripts/bench NAME` with the common --json option."""
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter)
    p.add_argument("--json", nargs="?", const="-", metavar="PATH",
                   help="the figures as JSON: on stdout (the tables then go to stderr), or into PATH")
    return p


def add_model(p: argparse.ArgumentParser, help_text: str = "a .gguf file") -> None:
    """--model PATH; the default comes from find_models() after parsing (see this module's docstring)."""
    p.add_argument("--model", type=Path, help=f"{help_text} (default: ${MODEL_ENV}, else the test model cache)")


def parse_args(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse; with `--json` on stdout, point this process's stdout (fd 1, so child processes too) at stderr."""
    global _json_fd
    args = p.parse_args(argv)
    if getattr(args, "json", None) == "-" and _json_fd is None:
        sys.stdout.flush()
        _json_fd = os.dup(1)
        os.dup2(2, 1)
    return args


def emit(args: argparse.Namespace, figures: object) -> None:
    """Hand the figures over as --json asked (nothing without --json)."""
    target = getattr(args, "json", None)
    if not target:
        return
    text = json.dumps(figures, indent=2, default=str) + "\n"
    if target == "-":
        sys.stdout.flush()
        data = text.encode()
        fd = _json_fd if _json_fd is not None else 1
        while data:
            data = data[os.write(fd, data):]
    else:
        Path(target).write_text(text, encoding="utf-8")


def model_candidates() -> list[Path]:
    """The test models where the tests keep them, in order of preference (they may not exist)."""
    cache = Path(os.environ.get("LOCALCHAT_TEST_CACHE", Path.home() / ".cache" / "localchat-tests"))
    found = []
    for env, name in TEST_MODELS:
        own = os.environ.get(env)
        found.append(Path(own) if own else next((p for p in (cache / name, cache / "models" / name) if p.is_file()),
                                                cache / name))
    return found


def find_models(given: Iterable[Path] | Path | None, count: int = 1, *, prefer: str | None = None) -> list[Path]:
    """The models to run: those given on the command line, else up to `count` that exist among
    model_candidates() (`prefer`: a file-name fragment that goes first). Exits with a message that says how
    to choose one when there is none."""
    if isinstance(given, Path):
        given = [given]
    paths = list(given or [])
    if not paths and os.environ.get(MODEL_ENV):
        paths = [Path(p) for p in os.environ[MODEL_ENV].split(os.pathsep) if p][:count]
    if not paths:
        candidates = [p for p in model_candidates() if p.is_file()]
        if prefer:
            candidates.sort(key=lambda p: prefer not in p.name.lower())
        paths = candidates[:count]
        if not paths:
            raise SystemExit(f"no model file found: pass one (--model PATH.gguf) or set {MODEL_ENV}=PATH.gguf "
                             f"(../shared/scripts/fetch-test-models fetches the test models into the test cache)")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"not a file: {', '.join(missing)}")
    return paths


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile, linearly interpolated between the closest ranks (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
