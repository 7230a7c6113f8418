"""Download speed: `localchat pull` (hf source) next to huggingface_hub's own hf_hub_download.

    scripts/bench download [--size-mb N] [--runs N] [--dir DIR] [--json [PATH]]

Generates one GGUF of at least --size-mb (default 300, minimum 200) in a temporary folder, serves it from
the local hub of the test suite (tests/support/hubserver.py, loopback, HF API with a CDN redirect), and
downloads it alternately with localchat's installer (resolve through huggingface_hub, our resumable
transfer, sha256 verified, moved into models/ and recorded: all of `localchat pull`) and with
hf_hub_download into a fresh cache, both in this process, progress display off for both. Each run starts
from nothing; every file is deleted afterwards. Prints MB/s per run, the medians and their ratio
(target: localchat >= 0.9 x huggingface_hub), then a resume check: a pull cancelled half-way and run
again fetches only the missing bytes (counted by the server).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402

TARGET = 0.9
REPO = "bench/Bench-GGUF"


def make_model(folder: Path, size_mb: int) -> Path:
    from tests.support.ggufgen import make_tiny_gguf

    # n_embd 2048: each transformer block holds about 168 MB of f32 weights.
    layers = max(1, math.ceil(size_mb * 1e6 / 167.8e6))
    return make_tiny_gguf(folder / "bench-f32.gguf", reply="Hi!", n_embd=2048, n_layer=layers)


def pull_with_localchat(home: Path, name: str) -> None:
    from localchat.catalog import ModelEntry, SourceSpec
    from localchat.services import Services

    svc = Services.open(home)
    entry = ModelEntry(id="bench", name="bench", files=(name,), sources=(SourceSpec("hf", REPO),), origin="user")
    svc.installer.install(entry, source="hf")


def pull_with_hf(cache: Path, name: str) -> None:
    from huggingface_hub import hf_hub_download

    hf_hub_download(REPO, name, cache_dir=str(cache))


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def resume_check(hub, work: Path, model: Path) -> str:
    from localchat.catalog import ModelEntry, SourceSpec
    from localchat.errors import Cancelled
    from localchat.services import Services
    from localchat.sources import CancelToken

    home = work / "resume-home"
    svc = Services.open(home)
    entry = ModelEntry(id="bench", name="bench", files=(model.name,), sources=(SourceSpec("hf", REPO),),
                       origin="user")
    size = model.stat().st_size
    cancel = CancelToken()

    def stop_half_way(p):
        if p.phase == "download" and p.done >= size // 2:
            cancel.cancel()

    try:
        svc.installer.install(entry, progress=stop_half_way, cancel=cancel)
    except Cancelled:
        pass
    kept = (svc.paths.downloads_dir / "bench" / (model.name + ".part")).stat().st_size
    mid = hub.bytes_sent()
    svc.installer.install(entry)
    second = hub.bytes_sent() - mid
    ok = svc.installer.verify("bench").ok and second == size - kept
    shutil.rmtree(home, ignore_errors=True)
    return (f"resume: a pull cancelled at {kept / 1e6:.1f} MB of {size / 1e6:.1f} MB, run again, fetched "
            f"{second / 1e6:.1f} MB (counted by the server) = exactly the missing bytes: {'yes' if ok else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    ap = benchlib.parser("scripts/bench download", __doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=300, help="model size in MB (at least 200)")
    ap.add_argument("--runs", type=int, default=5, help="downloads with each client, alternating")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the temporary files (default: system temp)")
    args = benchlib.parse_args(ap, argv)
    if args.size_mb < 200:
        ap.error("--size-mb must be at least 200")

    with tempfile.TemporaryDirectory(prefix="localchat-bench-download-", dir=args.dir) as tmp:
        work = Path(tmp)
        (work / "hub").mkdir()
        print(f"generating a GGUF of at least {args.size_mb} MB in {work} ...", flush=True)
        model = make_model(work / "hub", args.size_mb)
        size = model.stat().st_size
        from tests.support.hubserver import HubServer

        with HubServer() as hub:
            hub.add_repo(REPO, [model])
            # Both clients read these before huggingface_hub is first imported (below, inside the runs).
            os.environ["HF_ENDPOINT"] = hub.url
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
            os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
            os.environ.pop("HF_TOKEN", None)
            print(f"file: {model.name}, {size / 1e6:.1f} MB, served from {hub.url} (loopback); "
                  f"{os.cpu_count()} CPUs", flush=True)
            ours, theirs = [], []
            for run in range(args.runs):
                pair = [("localchat", pull_with_localchat, work / "lc-home", ours),
                        ("huggingface_hub", pull_with_hf, work / "hf-cache", theirs)]
                for _label, fn, target, out in (pair if run % 2 == 0 else pair[::-1]):
                    seconds = timed(fn, target, model.name)
                    out.append(size / 1e6 / seconds)
                    shutil.rmtree(target, ignore_errors=True)
                    os.sync()  # the next run does not pay for this one's write-back
                print(f"run {run + 1}: localchat {ours[-1]:7.0f} MB/s   huggingface_hub {theirs[-1]:7.0f} MB/s",
                      flush=True)
            med_ours, med_theirs = benchlib.median(ours), benchlib.median(theirs)
            ratio = med_ours / med_theirs
            print(f"\nmedian: localchat {med_ours:.0f} MB/s, huggingface_hub hf_hub_download {med_theirs:.0f} MB/s")
            print(f"ratio localchat / huggingface_hub: {ratio:.2f} (target >= {TARGET}: "
                  f"{'met' if ratio >= TARGET else 'NOT met'})")
            resume = resume_check(hub, work, model)
            print(resume)
    benchlib.emit(args, {"bytes": size, "localchat_mb_s": ours, "huggingface_hub_mb_s": theirs,
                         "median_localchat_mb_s": med_ours, "median_huggingface_hub_mb_s": med_theirs,
                         "ratio": ratio, "target": TARGET, "resume": resume})
    return 0


if __name__ == "__main__":
    sys.exit(main())
