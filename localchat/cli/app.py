"""Opening the chat app from the command line."""

from __future__ import annotations

import argparse


def open_tui(args: argparse.Namespace) -> int:
    from localchat.services import Services

    svc = Services.open(args.home, offline=args.offline)
    model_id = svc.entry(args.model).id if args.model else None  # an unknown id fails here, with suggestions
    from localchat.tui.app import make_app

    # A model that is not installed yet (or none at all) opens on the welcome screen, which installs it with a
    # progress bar inside the app.
    make_app(svc, model_id).run()
    return 0
