"""`localchat serve`: the installed models over an OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse
import os

from localchat.cli.models import services


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve the installed models over an OpenAI-compatible HTTP API",
        description="Serve the installed models over an OpenAI-compatible API (/v1/models, /v1/chat/completions, "
                    "/v1/completions, /v1/embeddings) and Ollama's (/api/...), the tutorial-style POST / and GET /health. Binds to loopback by default; "
                    "any other address needs an API key.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--ollama-port", type=int, metavar="PORT",
                   help="also listen on PORT, for tools that assume Ollama's port (11434); both ports serve both "
                        "APIs (Ollama's under /api, OpenAI's under /v1)")
    p.add_argument("--api-key", metavar="KEY",
                   help="require `Authorization: Bearer KEY` (default: $LOCALCHAT_API_KEY, which keeps it out of `ps`)")
    p.add_argument("--model", dest="serve_model", metavar="ID",
                   help="load this model at start and use it when a request names none")
    p.add_argument("--max-models", type=int, default=1, metavar="N",
                   help="models kept loaded at once; the least recently used is closed first (default: 1)")
    p.add_argument("--parallel", type=int, metavar="N",
                   help="replies each model decodes at once (continuous batching; default: load.parallel from "
                        "config.yaml, else chosen from the device and memory)")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from localchat.errors import LocalchatError
    from localchat.server import ServerSettings, run_server

    svc = services(args)
    api_key = args.api_key or os.environ.get("LOCALCHAT_API_KEY") or None
    settings = ServerSettings(host=args.host, port=args.port, api_key=api_key, default_model=args.serve_model,
                              max_models=args.max_models, ollama_port=args.ollama_port,
                              parallel=args.parallel or svc.config.load.get("parallel") or "auto").validate()
    if settings.default_model:
        entry = svc.entry(settings.default_model)
        if entry.is_remote:
            raise LocalchatError(f"'{entry.id}' is a remote engine; `localchat serve` serves local models",
                                 hint="pick an installed model (`localchat list --installed`)")
        svc.installed(entry.id)  # not installed: says to pull it
    run_server(svc, settings)
    return 0
