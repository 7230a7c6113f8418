"""`localchat run ID [PROMPT]`: one reply streamed to stdout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from localchat.cli.models import services
from localchat.errors import LocalchatError


def register(sub) -> None:
    p = sub.add_parser("run", help="one reply to stdout (the prompt from the command line or stdin)")
    p.add_argument("model", metavar="ID")
    p.add_argument("prompt", nargs="*", help="the message (default: read stdin)")
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repeat-penalty", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop at this text (repeatable)")
    p.add_argument("--n-ctx", type=int, help="context window in tokens")
    p.add_argument("--gpu-layers", metavar="N", help="'auto', 0 (CPU) or a number of layers")
    p.add_argument("--continue", dest="continue_id", nargs="?", const="last", metavar="CONV",
                   help="continue a saved conversation (default: the latest)")
    p.add_argument("--no-save", action="store_true", help="do not save this exchange in the history")
    p.add_argument("--stats", action="store_true", help="print tokens/s and time to first token on stderr")
    think = p.add_mutually_exclusive_group()
    think.add_argument("--think", dest="thinking", action="store_const", const="on",
                       help="a reasoning model thinks before it answers (default: as the config says, else the "
                            "model's own default)")
    think.add_argument("--no-think", dest="thinking", action="store_const", const="off",
                       help="a reasoning model answers without thinking")
    p.add_argument("--show-thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="print the model's thought on stderr, dimmed (default: the config's show_thinking); "
                        "stdout always gets the answer alone")
    p.add_argument("--thinking-budget", type=int, metavar="N",
                   help="tokens the thought may take; then it is closed and the answer follows (0: no thought)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the reply is a JSON object (always parses)")
    shape.add_argument("--json-schema", metavar="FILE", type=Path,
                       help="the reply is JSON that validates against the JSON schema in FILE")
    p.set_defaults(handler=cmd_run)


def _prompt(args: argparse.Namespace) -> str:
    if args.prompt:
        return " ".join(args.prompt)
    if sys.stdin.isatty():
        print("localchat: reading the prompt from stdin (end with Ctrl-D)", file=sys.stderr)
    return sys.stdin.read()


def cmd_run(args: argparse.Namespace) -> int:
    from localchat.chat import ChatSession
    from localchat.engine.api import ReasoningDelta, TextDelta
    from localchat.cli.progress import ProgressBar

    svc = services(args)
    entry = svc.entry(args.model)
    text = _prompt(args)
    sampling = svc.config.sampling_for(
        entry.id, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
        repeat_penalty=args.repeat_penalty, max_tokens=args.max_tokens, seed=args.seed,
        stop=tuple(args.stop) if args.stop else None, reasoning_budget=args.thinking_budget,
    ).validate()
    sampling = _constrained(sampling, args)
    if not entry.is_remote and not svc.registry.is_installed(entry.id):
        print(f"localchat: {entry.id} is not installed yet; pulling it", file=sys.stderr)
        svc.installer.install(entry, progress=ProgressBar())
    gpu_layers = None if args.gpu_layers is None else (args.gpu_layers if args.gpu_layers == "auto" else int(args.gpu_layers))
    store, conversation_id, history, system = _conversation(svc, args)
    engine = svc.start_engine(entry.id, n_ctx=args.n_ctx, n_gpu_layers=gpu_layers)
    try:
        template, warnings = svc.chat_template(entry, engine.info.chat_template, engine.info.bos_token, engine.info.eos_token)
        for w in warnings:
            print(f"localchat: warning: {w}", file=sys.stderr)
        session = ChatSession(engine, template, model_id=entry.id, sampling=sampling,
                              system=args.system if args.system is not None else system or svc.config.system_prompt_for(entry.id),
                              history=history, store=store, conversation_id=conversation_id,
                              thinking=args.thinking or svc.config.thinking_for(entry.id))
        turn = session.send(text)
        if turn.notice:
            print(f"localchat: note: {turn.notice}", file=sys.stderr)
        thought = _ThoughtOut(svc.config.show_thinking if args.show_thinking is None else args.show_thinking)
        try:
            for event in turn:
                if isinstance(event, TextDelta):
                    thought.end()
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, ReasoningDelta):
                    thought.write(event.text)
        except KeyboardInterrupt:
            turn.cancel()
            raise
        finally:
            thought.end()
            if turn.text and not turn.text.endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
        if args.stats and turn.usage:
            u = turn.usage
            thinking = f", {u.reasoning_tokens} of them thinking" if u.reasoning_tokens else ""
            print(f"localchat: {u.completion_tokens} tokens{thinking}, {u.tokens_per_second:.1f} tokens/s, "
                  f"TTFT {u.ttft * 1000:.0f} ms, prompt {u.prompt_tokens} tokens ({u.prompt_eval_tokens} evaluated)",
                  file=sys.stderr)
        if turn.status == "length":
            if sampling.grammar is not None:
                raise LocalchatError("the JSON reply was cut off at --max-tokens and does not parse",
                                     hint="raise --max-tokens")
            print("localchat: note: the reply stopped at --max-tokens", file=sys.stderr)
    finally:
        engine.close()
        if store is not None:
            store.close()
    return 0


class _ThoughtOut:
    """A reasoning model's thought on stderr (dim on a terminal), apart from the answer on stdout; nothing
    when it is not to be shown."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.dim = show and sys.stderr.isatty()
        self.open = False

    def write(self, text: str) -> None:
        if not self.show:
            return
        if not self.open:
            self.open = True
            sys.stderr.write("\x1b[2m" if self.dim else "")
        sys.stderr.write(text)
        sys.stderr.flush()

    def end(self) -> None:
        if self.open:
            self.open = False
            sys.stderr.write(("\x1b[0m" if self.dim else "") + "\n\n")
            sys.stderr.flush()


def _constrained(sampling, args):
    """--json / --json-schema FILE: the grammar that makes the reply parse (and validate)."""
    from dataclasses import replace

    from localchat.structured import OutputConstraint, SchemaError, schema_constraint

    if args.json:
        return replace(sampling, grammar=OutputConstraint("json").to_dict())
    if args.json_schema is None:
        return sampling
    try:
        schema = json.loads(args.json_schema.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LocalchatError(f"cannot read {args.json_schema}: {exc.strerror}") from None
    except ValueError as exc:
        raise LocalchatError(f"{args.json_schema} is not JSON ({exc})") from None
    try:
        constraint = schema_constraint(schema, "schema")
    except SchemaError as exc:
        raise LocalchatError(f"{args.json_schema}: {exc.message}") from None
    return replace(sampling, grammar=constraint.to_dict())


def _conversation(svc, args):
    """(store, conversation id, history, system prompt) for --continue / saving; no store with --no-save."""
    if args.no_save and args.continue_id is None:
        return None, None, None, None
    store = svc.store
    if args.continue_id is None:
        return store, None, None, None
    from localchat.errors import LocalchatError
    from localchat.types import Message

    conv_id = store.latest_conversation_id() if args.continue_id == "last" else _int_id(args.continue_id)
    if conv_id is None:
        raise LocalchatError("there is no saved conversation to continue", hint="start one with `localchat run ID PROMPT`")
    conv = store.conversation(conv_id)
    history = [Message(m.role, m.content) for m in conv.messages if m.role in ("user", "assistant") and m.content]
    return (None if args.no_save else store), (None if args.no_save else conv_id), history, conv.system


def _int_id(text: str) -> int:
    from localchat.errors import LocalchatError

    try:
        return int(text)
    except ValueError:
        raise LocalchatError(f"'{text}' is not a conversation id", hint="`localchat history` lists them") from None
