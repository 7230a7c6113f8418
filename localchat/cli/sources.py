"""Finding and adding models: search, add, import."""

from __future__ import annotations

import argparse
import sys

from localchat.cli.models import services
from localchat.cli.progress import ProgressBar
from localchat.units import human_size


def register(sub) -> None:
    p = sub.add_parser("search", help="GGUF repositories and their quant files on Hugging Face and ModelScope")
    p.add_argument("query", nargs="+", metavar="WORD", help="words the repository name must contain")
    p.add_argument("--hub", choices=("hf", "modelscope", "all"), default="all", help="which hub to ask (default: all)")
    p.add_argument("--limit", type=int, default=8, metavar="N", help="repositories per hub (default: 8)")
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("add", help="add a GGUF from a hub or URL to your catalog (downloads and verifies it)",
                       description="Download one GGUF (all parts of a split one), verify it, and add a catalog "
                                   "entry with its context length, chat template and sha256.")
    p.add_argument("source", metavar="SOURCE", help="hf:OWNER/REPO, modelscope:OWNER/REPO or url:https://...")
    p.add_argument("file", metavar="FILE", nargs="?", help="the .gguf file in the repository (first part if split)")
    p.add_argument("--id", dest="model_id", metavar="ID", help="the id to use (default: from the file name)")
    p.set_defaults(handler=cmd_add)

    p = sub.add_parser("import", help="install a local .gguf (USB stick, shared drive) and add it to your catalog")
    p.add_argument("path", metavar="PATH.gguf", help="the file (the first part of a split GGUF)")
    p.add_argument("--id", dest="model_id", metavar="ID", help="the id to use (default: from the file name)")
    p.set_defaults(handler=cmd_import)


def cmd_search(args: argparse.Namespace) -> int:
    from localchat.sources.search import HUBS, search_hubs

    svc = services(args)
    hubs = HUBS if args.hub == "all" else (args.hub,)
    query = " ".join(args.query)
    repos, problems = search_hubs(query, hubs, limit=max(1, args.limit), offline=svc.offline)
    for repo in repos:
        downloads = f"  ({repo.downloads:,} downloads)" if repo.downloads else ""
        print(f"{repo.hub}:{repo.repo}{downloads}")
        width = max(len(f.name) for f in repo.files)
        for f in repo.files:
            parts = f"  ({f.parts} parts)" if f.parts > 1 else ""
            print(f"    {f.name.ljust(width)}  {(f.quant or '-').ljust(7)}  {human_size(f.size):>9}{parts}")
    for line in problems:
        print(f"localchat: {line}", file=sys.stderr)
    if repos:
        print(f"\nadd one with: localchat add {repos[0].hub}:{repos[0].repo} {repos[0].files[0].name}")
    elif not problems:
        print(f"no GGUF repositories found for '{query}'")
    return 1 if problems and not repos else 0


def cmd_add(args: argparse.Namespace) -> int:
    from localchat.sources import CancelToken
    from localchat.sources.adding import add_from_source

    svc = services(args)
    cancel = CancelToken()
    try:
        added = add_from_source(svc, args.source, args.file, args.model_id, progress=ProgressBar(), cancel=cancel)
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    _report(added, svc)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from localchat.sources import CancelToken
    from localchat.sources.adding import import_file

    svc = services(args)
    cancel = CancelToken()
    try:
        added = import_file(svc, args.path, args.model_id, progress=ProgressBar(), cancel=cancel)
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    _report(added, svc)
    return 0


def _report(added, svc) -> None:
    e, rec = added.entry, added.installed
    ctx = f"context {e.context}" if e.context else "context unknown"
    print(f"{e.id}: installed {human_size(rec.size)} from {rec.source} at {rec.path}")
    print(f"{e.id}: added to {svc.paths.user_catalog} ({e.quant or 'quant unknown'}, {ctx}, template {e.template})")
    from localchat.sources.adding import template_choice

    print(f"{e.id}: chat template {e.template}: {template_choice(added.facts)[1]}")
    print(f"chat with it: localchat --model {e.id}")
