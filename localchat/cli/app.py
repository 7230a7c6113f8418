"""Opening the chat app from the command line."""

from __future__ import annotations

import argparse
import sys


def open_tui(args: argparse.Namespace) -> int:
    from localchat.cli.progress import ProgressBar
    from localchat.services import Services

    svc = Services.open(args.home, offline=args.offline)
    if args.model:
        model_id = svc.entry(args.model).id
        if not svc.registry.is_installed(model_id):
            print(f"localchat: {model_id} is not installed yet; pulling it", file=sys.stderr)
            svc.installer.install(svc.entry(model_id), progress=ProgressBar())
    else:
        model_id = svc.default_model_id()
        if model_id is None:
            print("localchat: no model installed yet; installing the built-in default model", file=sys.stderr)
            model_id = svc.ensure_default_model(progress=ProgressBar())
    from localchat.tui.app import make_app

    make_app(svc, model_id).run()
    return 0
