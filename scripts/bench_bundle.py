"""Bundle export/import throughput against plain `tar` + `sha256sum` of the same model file.

    scripts/bench bundle [--model PATH | --synthetic MB] [--runs N] [--dir DIR] [--json [PATH]]

The model (default: $LOCALCHAT_BENCH_MODEL, else the test cache's Qwen2.5-Coder-0.5B GGUF: scripts/benchlib.py)
is registered in a temporary LOCALCHAT_HOME without copying it.
Each run, side by side on the same warm page cache and disk (dirty pages flushed, untimed, before each):
  export  localchat: export_bundle (read once, hash, write the tar, fsync)
          baseline:  tar cf X.tar FILE; sha256sum FILE; sync X.tar   (and with `openssl dgst -sha256`)
  import  localchat: import_bundle into an empty home (read, hash, write, verify, move, record)
          baseline:  tar xf X.tar; sha256sum FILE                    (and with `openssl dgst -sha256`)
MB/s counts the model's bytes (1 MB = 10^6 bytes); the ratio is localchat / baseline speed (target >= 0.8),
from the best run of each side and from the medians.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402

MODEL_ID = "bench-model"


def timed(fn) -> float:
    os.sync()  # untimed: each side starts with no dirty pages left by the one before
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def synthesize(path: Path, megabytes: int) -> Path:
    with open(path, "wb") as f:
        f.write(b"GGUF")
        for _ in range(megabytes):
            f.write(os.urandom(1_000_000))
    return path


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = benchlib.parser("scripts/bench bundle", __doc__, raw=True)
    benchlib.add_model(ap)
    ap.add_argument("--synthetic", type=int, metavar="MB", help="use a generated file of MB megabytes instead "
                    "(machines without the model; throughput does not depend on the bytes)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir); needs ~3x the model")
    args = benchlib.parse_args(ap, argv)
    if not args.synthetic:
        args.model = benchlib.find_models(args.model, prefer="qwen")[0]

    from localchat.bundle import export_bundle, import_bundle
    from localchat.registry import InstalledFile, InstalledModel
    from localchat.services import Services
    from localchat.sources.base import sha256_file
    from localchat.usercatalog import append_entry, render_entry

    scratch = Path(tempfile.mkdtemp(prefix="bench-bundle-", dir=args.dir))
    try:
        model = synthesize(scratch / "synthetic-model.gguf", args.synthetic) if args.synthetic else args.model.resolve()
        size = model.stat().st_size
        source = Services.open(scratch / "home-a")
        digest = sha256_file(model)  # also warms the page cache for both sides
        append_entry(source.paths.user_catalog, render_entry({"id": MODEL_ID, "files": [model.name], "sha256": digest,
                                                              "size": size, "template": "qwen"}))
        source.registry.record(InstalledModel(MODEL_ID, [InstalledFile(model.name, digest, size)],
                                              source=f"file:{model}", directory=str(model.parent)))
        source = Services.open(scratch / "home-a")
        print(f"model   {model} ({size / 1e6:.1f} MB), sha256 {digest[:16]}…")
        print(f"scratch {scratch}; {args.runs} run(s) each, warm page cache\n")

        bundle, tarball = scratch / "model.lcb", scratch / "model.tar"
        # coreutils sha256sum may lack the CPU's SHA instructions that OpenSSL (and Python's hashlib) use;
        # `openssl dgst -sha256` is the stricter baseline, reported next to the one the target names.
        hasher = ["openssl", "dgst", "-sha256"] if shutil.which("openssl") else None
        names = ["export", "tar+sha256sum (export)", "tar+openssl (export)", "import", "tar x+sha256sum (import)",
                 "tar x+openssl (import)"]
        rows = {k: [] for k in names if hasher or "openssl" not in k}
        leftovers: list[Path] = []
        def tar_export(tool):
            tarball.unlink(missing_ok=True)
            sh("tar", "cf", str(tarball), "-C", str(model.parent), model.name)
            sh(*tool, str(model))
            sh("sync", str(tarball))

        def our_import(run):
            target_home = scratch / f"home-b{run}"
            import_bundle(Services.open(target_home), bundle)
            return target_home

        def tar_import(tool, run):
            out_dir = scratch / f"untar{run}"
            out_dir.mkdir()
            sh("tar", "xf", str(tarball), "-C", str(out_dir))
            sh(*tool, str(out_dir / model.name))
            return out_dir

        for run in range(args.runs):
            # Each side leaves the page cache and the file system in a different state for the next one:
            # the order is reversed every other run so that no side always goes first.
            exports = [("export", lambda: export_bundle(source, [MODEL_ID], bundle, overwrite=True))]
            imports = [("import", lambda run=run: our_import(run))]
            for tool, name in ((["sha256sum"], "sha256sum"), (hasher, "openssl")):
                if f"tar+{name} (export)" in rows:
                    exports.append((f"tar+{name} (export)", lambda tool=tool: tar_export(tool)))
                    imports.append((f"tar x+{name} (import)", lambda tool=tool, run=run: tar_import(tool, run)))
            order = 1 if run % 2 == 0 else -1
            for key, step in exports[::order]:
                rows[key].append(timed(step))
            for key, step in imports[::order]:
                rows[key].append(timed(lambda step=step: leftovers.append(step())))
                shutil.rmtree(leftovers.pop())  # untimed: each import starts on an empty target
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in rows.items()))

        # On a shared machine other processes come and go: the best run of each side is the least
        # disturbed figure; the median is shown next to it.
        print(f"\n{'':28}{'MB/s best':>10}{'median':>8}")
        for k, v in rows.items():
            print(f"{k:<28}{size / 1e6 / min(v):10.0f}{size / 1e6 / benchlib.median(v):8.0f}")
        print()
        figures: dict = {"model": str(model), "bytes": size, "runs_s": rows, "ratios": {}}
        for base in ("sha256sum", "openssl"):
            if f"tar+{base} (export)" not in rows:
                continue
            ratios = []
            for ours, theirs in (("export", f"tar+{base} (export)"), ("import", f"tar x+{base} (import)")):
                best = min(rows[theirs]) / min(rows[ours])
                med = benchlib.median(rows[theirs]) / benchlib.median(rows[ours])
                ratios.append(f"{ours} {best:.2f} (median {med:.2f})")
                figures["ratios"][f"{ours} vs tar+{base}"] = {"best": best, "median": med}
            print(f"vs tar + {base:<10} " + "   ".join(ratios) + "   target >= 0.8")
        benchlib.emit(args, figures)
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
