"""`localchat history`: list, show, search, export, import, rename and delete saved conversations."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localchat.store import ConversationStore

LAST = "last"


def register(sub) -> None:
    p = sub.add_parser("history", help="saved conversations: list, show, search, export, import, rm, rename",
                       description="Saved conversations. With no subcommand, lists them, newest first.")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="list at most N conversations (default 50)")
    p.set_defaults(handler=cmd_list)
    hsub = p.add_subparsers(dest="history_command", metavar="SUBCOMMAND")

    q = hsub.add_parser("list", help="conversations, newest activity first")
    # SUPPRESS: without it this default would overwrite `history --limit N list`.
    q.add_argument("--limit", type=int, default=argparse.SUPPRESS, metavar="N", help="at most N conversations (default 50)")
    q.set_defaults(handler=cmd_list)

    q = hsub.add_parser("show", help="print a conversation")
    q.add_argument("id", type=conversation_id, metavar="ID", help=f"conversation number, or '{LAST}'")
    q.set_defaults(handler=cmd_show)

    q = hsub.add_parser("search", help="full-text search over all messages (Chinese and other CJK text included)")
    q.add_argument("query", nargs="+", metavar="QUERY", help='words that must all occur; "quotes" for a phrase')
    q.add_argument("--limit", type=int, default=20, metavar="N", help="at most N hits (default 20)")
    q.set_defaults(handler=cmd_search)

    q = hsub.add_parser("export", help="write a conversation as Markdown or JSON (OpenAI messages format)")
    q.add_argument("id", type=conversation_id, metavar="ID", help=f"conversation number, or '{LAST}'")
    q.add_argument("--format", "-f", choices=("md", "json"), default="md", help="md (default) or json")
    q.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")
    q.set_defaults(handler=cmd_export)

    q = hsub.add_parser("import", help="add a conversation from a JSON file (ours, or OpenAI messages)")
    q.add_argument("file", metavar="FILE.json", help="the file to read ('-' for standard input)")
    q.set_defaults(handler=cmd_import)

    q = hsub.add_parser("rm", help="delete conversations")
    q.add_argument("ids", type=conversation_id, nargs="+", metavar="ID")
    q.set_defaults(handler=cmd_rm)

    q = hsub.add_parser("rename", help="give a conversation a new title")
    q.add_argument("id", type=conversation_id, metavar="ID", help=f"conversation number, or '{LAST}'")
    q.add_argument("title", nargs="+", metavar="TITLE")
    q.set_defaults(handler=cmd_rename)


def conversation_id(text: str) -> int | str:
    if text.strip().lower() == LAST:
        return LAST
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a conversation number (see `localchat history`)")
    return value


def open_store(args: argparse.Namespace) -> ConversationStore:
    """The store of the composition root (the same one the TUI and the server use); `with` closes it."""
    from localchat.services import Services

    return Services.open(getattr(args, "home", None), offline=getattr(args, "offline", None)).store


def resolve(store, ident: int | str) -> int:
    if ident != LAST:
        return int(ident)
    latest = store.latest_conversation_id()
    if latest is None:
        from localchat.errors import ConversationNotFound

        raise ConversationNotFound("there are no saved conversations yet", hint="start one with `localchat`")
    return latest


def cmd_list(args: argparse.Namespace) -> int:
    from localchat.store.text import display_width, truncate

    with open_store(args) as store:
        rows = store.list_conversations(limit=max(1, args.limit))
        total = store.count_conversations()
    if not rows:
        print("no saved conversations yet: start one with `localchat` or `localchat run MODEL PROMPT`")
        return 0
    now = time.time()
    table = [("ID", "TITLE", "MODEL", "MESSAGES", "LAST ACTIVITY")]
    table += [(str(r.id), truncate(r.title or "(untitled)", 48), truncate(r.model or "-", 32), str(r.message_count),
               ago(r.updated, now)) for r in rows]
    widths = [max(display_width(row[i]) for row in table) for i in range(len(table[0]))]
    right = {0, 3}
    for row in table:
        cells = [_pad(cell, widths[i], right=i in right, width_of=display_width) for i, cell in enumerate(row)]
        print("  ".join(cells).rstrip())
    if total > len(rows):
        print(f"\n{len(rows)} of {total} conversations shown (--limit N for more)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        text = store.export(resolve(store, args.id), "md")
    sys.stdout.write(text)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    query = " ".join(args.query)
    with open_store(args) as store:
        hits = store.search(query, limit=max(1, args.limit))
    if not hits:
        print(f"no messages match {query!r}")
        return 0
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    mark = ("\x1b[1;33m", "\x1b[0m") if color else ("[", "]")
    for hit in hits:
        print(f"{hit.conversation_id:>5}  {hit.title or '(untitled)'}  · {hit.role}")
        print(f"       {hit.marked(*mark)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        text = store.export(resolve(store, args.id), args.format)
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    target = Path(args.output)
    _atomic_write(target, text)
    print(f"wrote {target}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from localchat.errors import ConversationFormatError

    name = "standard input" if args.file == "-" else args.file
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise ConversationFormatError(f"cannot read {name}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConversationFormatError(f"{name} is not UTF-8 text (byte {exc.start})",
                                      hint="export it again as UTF-8 JSON") from exc
    with open_store(args) as store:
        try:
            cid = store.import_json(text)
        except ConversationFormatError as exc:
            raise ConversationFormatError(f"{name}: {exc.message}", hint=exc.hint) from exc
        conv = store.conversation(cid)
    print(f"imported conversation {cid}: {conv.title or '(untitled)'} ({len(conv.messages)} messages)")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        ids = [resolve(store, i) for i in args.ids]
        titles = {cid: store.conversation(cid).title for cid in ids}  # every id checked before any is deleted
        for cid in ids:
            store.delete(cid)
            print(f"deleted conversation {cid}: {titles[cid] or '(untitled)'}")
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    title = " ".join(args.title)
    with open_store(args) as store:
        cid = resolve(store, args.id)
        store.rename(cid, title)
        print(f"renamed conversation {cid}: {store.conversation(cid).title}")
    return 0


def ago(ts: float, now: float) -> str:
    """Last activity the way `ollama list` shows it: relative while recent, then the date."""
    seconds = max(0.0, now - ts)
    if seconds < 60:
        return "just now"
    for unit, size, limit in (("minute", 60, 3600), ("hour", 3600, 86400), ("day", 86400, 7 * 86400)):
        if seconds < limit:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def _pad(cell: str, width: int, right: bool, width_of) -> str:
    fill = " " * (width - width_of(cell))
    return fill + cell if right else cell + fill


def _atomic_write(target: Path, text: str) -> None:
    from localchat.errors import StoreError
    from localchat.fsutil import atomic_write_text

    try:
        atomic_write_text(target, text)
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc.strerror}", hint="check the folder exists and is writable") from exc
