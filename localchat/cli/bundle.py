"""`localchat bundle export|import|inspect`: move models between machines as one checked file."""

from __future__ import annotations

import argparse

from localchat.cli.models import services
from localchat.cli.progress import ProgressBar
from localchat.units import human_size


def register(sub) -> None:
    p = sub.add_parser("bundle", help="export installed models to one file, or import them (air-gapped machines)",
                       description="A bundle (.lcb) is a tar file holding model files, their catalog entries and "
                                   "sha256; import checks every byte before installing anything.")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)

    e = bsub.add_parser("export", help="write installed models into one bundle file")
    e.add_argument("models", metavar="ID", nargs="+")
    e.add_argument("-o", "--output", metavar="FILE", required=True, help="the bundle to write (e.g. models.lcb)")
    e.add_argument("--force", action="store_true", help="replace FILE if it exists")
    e.set_defaults(handler=cmd_export)

    i = bsub.add_parser("import", help="check a bundle and install its models (all or nothing)")
    i.add_argument("file", metavar="FILE")
    i.set_defaults(handler=cmd_import)

    s = bsub.add_parser("inspect", help="list a bundle's models without importing")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--verify", action="store_true", help="also hash every file against the manifest (reads it all)")
    s.set_defaults(handler=cmd_inspect)


def _cancellable(fn, *args, **kwargs):
    from localchat.sources import CancelToken

    cancel = CancelToken()
    try:
        return fn(*args, progress=ProgressBar(), cancel=cancel, **kwargs)
    except KeyboardInterrupt:
        cancel.cancel()
        raise


def cmd_export(args: argparse.Namespace) -> int:
    from localchat.bundle import export_bundle

    svc = services(args)
    manifest = _cancellable(export_bundle, svc, args.models, args.output, overwrite=args.force)
    print(f"wrote {manifest.path}: {len(manifest.models)} model(s), {human_size(manifest.size)} "
          f"({', '.join(manifest.ids)}; sha256 of every file in the manifest)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from localchat.bundle import import_bundle

    svc = services(args)
    before = set(svc.catalog.ids())
    installed = _cancellable(import_bundle, svc, args.file)
    for rec in installed:
        print(f"{rec.id}: installed {human_size(rec.size)} (sha256 verified) at {rec.path}")
    added = [rec.id for rec in installed if rec.id not in before]
    if added:
        print(f"added {', '.join(added)} to your catalog ({svc.paths.user_catalog})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from localchat.bundle import inspect_bundle, verify_bundle

    manifest = _cancellable(verify_bundle, args.file) if args.verify else inspect_bundle(args.file)
    print(f"{manifest.path}: localchat bundle format {manifest.version}, made {manifest.created or '?'} "
          f"by localchat {manifest.localchat_version or '?'}")
    rows = [("ID", "NAME", "QUANT", "SIZE", "TEMPLATE", "FILE", "SHA256")]
    for m in manifest.models:
        for k, f in enumerate(m.files):
            first = k == 0
            rows.append((m.id if first else "", m.entry.name if first else "", (m.entry.quant or "-") if first else "",
                         human_size(f.size), (m.entry.template or "auto") if first else "", f.name, f.sha256))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print(f"\n{len(manifest.models)} model(s), {human_size(manifest.size)}"
          + ("; every file matches its sha256" if args.verify else "; not imported (`localchat bundle import` installs)"))
    return 0
