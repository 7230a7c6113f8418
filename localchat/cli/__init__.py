"""`localchat` command line. Subcommand modules are imported here; heavy libraries only inside handlers."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from localchat import __version__

# Each module exposes register(sub): it adds its parsers with set_defaults(handler=fn), fn(args) -> int.
COMMAND_MODULES = ["localchat.cli.chat", "localchat.cli.models", "localchat.cli.sources", "localchat.cli.history",
                   "localchat.cli.bundle", "localchat.cli.serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localchat",
        description="Private, offline-first AI chat in your terminal. With no command, opens the chat app.",
    )
    parser.add_argument("--version", action="version", version=f"localchat {__version__}")
    parser.add_argument("--home", metavar="DIR", help="keep all data, config and logs under DIR (same as LOCALCHAT_HOME)")
    parser.add_argument("--offline", action="store_true", default=None, help="make no network connection at all")
    parser.add_argument("--model", "-m", metavar="ID", help="model to open in the chat app (default: the one used last)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not in this build
                continue
            raise
        module.register(sub)
    parser.set_defaults(handler=_open_tui)
    return parser


def _open_tui(args: argparse.Namespace) -> int:
    from localchat.cli.app import open_tui

    return open_tui(args)


def _apply_offline(args: argparse.Namespace) -> None:
    """Guard the whole process before any command runs when offline mode is on: --offline,
    LOCALCHAT_OFFLINE=1 (inherited from a parent) or `offline: true` in config.yaml. A config that cannot
    be read stops the command: offline mode must never be off by accident."""
    from localchat.offline import enforce_offline, env_says_offline

    if not (args.offline or env_says_offline()):
        from localchat.paths import Paths

        config_file = Paths.from_env(args.home).config_file
        if not config_file.exists():
            return
        from localchat.config import Config

        if not Config.load_file(config_file).offline:
            return
    args.offline = True
    enforce_offline()


def _quiet_libraries(args: argparse.Namespace) -> None:
    """Libraries log, warn and draw progress bars into the log dir, never onto the terminal."""
    from localchat.liblog import route_library_output
    from localchat.paths import Paths

    route_library_output(Paths.from_env(args.home).log_dir)


def _one_line(exc) -> str:
    """A worker crash carries the last lines of llama.cpp's log in its hint: on the command line, point at
    the log instead, so the error stays one line."""
    from localchat.errors import WorkerCrashed

    log_path = getattr(exc, "log_path", None)
    if isinstance(exc, WorkerCrashed) and log_path is not None:
        return f"{exc.message}; its log is {log_path}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    from localchat.errors import LocalchatError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _quiet_libraries(args)
        _apply_offline(args)
        return int(args.handler(args) or 0)
    except LocalchatError as exc:
        print(f"localchat: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localchat: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `localchat run ... | head`
        sys.stderr.close()
        return 0
