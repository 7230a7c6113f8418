"""A conversation: history, the context budget, and one turn = render -> stream -> persist.

Knows nothing of Textual or the CLI. The engine, template and store are handed in, so the same session
serves the TUI, `localchat run` and the server. A turn yields the engine's events (localchat.engine.api):
`for event in turn: if isinstance(event, TextDelta): ...`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from localchat.engine.checkpoints import common_prefix
from localchat.engine.api import (ChatTemplate, Engine, Event, Generation, Prompt, ReasoningDelta, StatefulEngine,
                                  TextDelta)
from localchat.errors import ContextOverflowError, EngineError, LocalchatError, StoreError, TemplateError
from localchat.reasoning import Thinking, of_model, template_kwargs
from localchat.tools import ToolRequest, check_conversation
from localchat.tooluse import for_prompt, render, server_renders
from localchat.types import Message, ModelInfo, SamplingParams, ToolCall, Usage

if TYPE_CHECKING:
    from localchat.store.database import ConversationStore
    from localchat.store.reply import ReplyWriter

# Tokens a ChatML message costs besides its content: <|im_start|>, role, "\n", <|im_end|>, "\n".
_MESSAGE_OVERHEAD = 5
# Never reserve less than this for the reply, whatever max_tokens says.
_MIN_REPLY_RESERVE = 64
# Rendered in place of a message's text to find where that text starts in the prompt (issue 15).
_SENTINEL = "\x00"

log = logging.getLogger(__name__)


def apply_thinking(template: ChatTemplate, info: ModelInfo, thinking: Thinking,
                   sampling: SamplingParams) -> tuple[ChatTemplate, SamplingParams]:
    """The template and sampling of a reply with thinking on, off or as the template says (default).

    On and off go through the template's own switch (Qwen3's `enable_thinking`). A reasoning model whose
    template has none (or a native renderer, which cannot set one) gets "off" from the engine instead: a
    budget of 0 closes its thought as it opens and the answer follows. Models that do not reason: as they are.
    Used by ChatSession and the server alike."""
    from localchat.template_sandbox import SandboxedTemplate

    if thinking != "default" and server_renders(template):  # the server renders the template: Qwen3's switch
        return template, replace(sampling, template_kwargs={"enable_thinking": thinking == "on"})
    fmt = of_model(info.chat_template, info.think_tags)
    if fmt is None or thinking == "default":
        return template, sampling
    variables = template_kwargs(fmt, thinking)
    if variables and isinstance(template, SandboxedTemplate):
        return template.with_variables(**variables), sampling
    if thinking == "off":
        return template, replace(sampling, reasoning_budget=0)
    return template, sampling


@dataclass
class TurnPlan:
    """What goes into one prompt: how many old messages had to be left out, and why."""

    # The rendered prompt; for an engine that applies its own chat template (a remote server) the
    # template returns the messages themselves, and they go to the engine as they are.
    prompt: Prompt
    prompt_tokens: int
    dropped: int = 0
    notice: str | None = None
    # Where the last message's text and the generation prompt start in `prompt` (characters): the engine
    # checkpoints its state there, so an edit of that message, a regenerate and the next turn resume at
    # them. Empty for an engine given the messages.
    starts: tuple[int, ...] = ()


class ChatSession:
    """One conversation with one model at a time (the model can be swapped between turns)."""

    def __init__(
        self,
        engine: Engine | None,
        template: ChatTemplate | None,
        *,
        model_id: str,
        sampling: SamplingParams | None = None,
        system: str | None = None,
        history: list[Message] | None = None,
        store: ConversationStore | None = None,
        conversation_id: int | None = None,
        thinking: Thinking = "default",
        tools: ToolRequest | None = None,
    ) -> None:
        self.engine = engine
        self.template = template
        self.model_id = model_id
        self.sampling = sampling or SamplingParams()
        self.system = system
        self.messages: list[Message] = list(history or [])
        self.store = store
        self.conversation_id = conversation_id
        # A reasoning model thinks (on), does not (off) or does as its template says (default): config
        # `thinking` / `models.ID.thinking`, `localchat run --think/--no-think`, the TUI.
        self.thinking: Thinking = thinking
        # The functions the model may call (localchat.tools.parse_tools); a turn that calls them ends with
        # `turn.tool_calls`, answered with answer_tool() and resume(). Tool messages are not stored.
        self.tools = tools
        self.dropped = 0  # older messages outside the window in the last turn
        self.template_warning: str | None = None
        self._token_cache: dict[tuple[str, str], int] = {}

    # --- model swap -----------------------------------------------------------------------------

    def use_model(self, engine: Engine, template: ChatTemplate, model_id: str) -> None:
        """Continue this conversation on another model; history is re-rendered with its template."""
        self.engine = engine
        self.template = template
        self.model_id = model_id
        self._token_cache.clear()  # another tokenizer

    def require_engine(self) -> Engine:
        # A session exists before its model has loaded (the TUI opens on one); a turn needs the model.
        if self.engine is None:
            raise LocalchatError("no model is loaded yet", hint="wait for the model to load, or pick one")
        return self.engine

    # --- turns ----------------------------------------------------------------------------------

    def send(self, text: str, sampling: SamplingParams | None = None) -> "ChatTurn":
        """Add the user's message (saved before generation starts) and start the reply."""
        if not text.strip():
            raise LocalchatError("the message is empty", hint="type something first")
        message = Message("user", text)
        plan = self.plan([*self.messages, message], sampling or self.sampling)  # may raise ContextOverflowError
        self.messages.append(message)
        self._persist_user(text)
        return self._start(plan, sampling or self.sampling)

    def regenerate(self, sampling: SamplingParams | None = None) -> "ChatTurn":
        """Drop the last reply and answer the last user message again."""
        while self.messages and self.messages[-1].role == "assistant":
            self.messages.pop()
            self._delete_from(len(self.messages))
        if not self.messages:
            raise LocalchatError("there is no message to answer yet", hint="send a message first")
        plan = self.plan(self.messages, sampling or self.sampling)
        return self._start(plan, sampling or self.sampling)

    def edit_last(self, text: str, sampling: SamplingParams | None = None) -> "ChatTurn":
        """Replace the last user message (and the reply to it) and send it again."""
        while self.messages and self.messages[-1].role == "assistant":
            self.messages.pop()
        if self.messages and self.messages[-1].role == "user":
            self.messages.pop()
        self._delete_from(len(self.messages))
        return self.send(text, sampling)

    def answer_tool(self, call_id: str, content: str) -> None:
        """The result of a call the last reply made; resume() then lets the model go on with it."""
        message = Message("tool", content, tool_call_id=call_id)
        check_conversation([*self.messages, message])  # raises ToolsError for a call nobody made
        self.messages.append(message)

    def resume(self, sampling: SamplingParams | None = None) -> "ChatTurn":
        """The reply after the tool results (answer_tool)."""
        if not self.messages or self.messages[-1].role != "tool":
            raise LocalchatError("there is no tool result to go on from", hint="answer the tool calls first")
        return self._start(self.plan(self.messages, sampling or self.sampling), sampling or self.sampling)

    def _start(self, plan: TurnPlan, sampling: SamplingParams) -> "ChatTurn":
        self.dropped = plan.dropped
        sampling = self._thinking_sampling(sampling)
        if plan.starts:
            sampling = replace(sampling, message_starts=plan.starts)
        # the tools' grammar (or --json's), held until a thought the prompt opened is closed; calls parsed
        sampling, wrap = for_prompt(self.template, plan.prompt, self.tools, sampling)
        generation = wrap(self.require_engine().generate(plan.prompt, sampling))
        writer = None
        if self.store is not None and self.conversation_id is not None:
            writer = self.store.begin_reply(self.conversation_id, model=self.model_id)
        return ChatTurn(self, generation, plan, writer)

    def _finish(self, turn: "ChatTurn") -> None:
        if turn.text or turn.tool_calls:  # the thought goes with it; the template decides whether it reaches
            self.messages.append(Message("assistant", turn.text, turn.tool_calls, reasoning=turn.reasoning))

    # --- context budget -------------------------------------------------------------------------

    def plan(self, messages: list[Message], sampling: SamplingParams) -> TurnPlan:
        """Render the prompt, leaving out the oldest turns (never the system prompt) when it does not fit."""
        n_ctx = self.require_engine().info.n_ctx
        reserve = max(_MIN_REPLY_RESERVE, min(sampling.max_tokens, n_ctx // 4))
        budget = n_ctx - reserve
        counts = self._count(messages)
        system_cost = self._count([Message("system", self.system)])[0] if self.system else 0
        start = 0
        total = system_cost + sum(counts) + _MESSAGE_OVERHEAD
        while total > budget and start < len(messages) - 1:
            # Drop whole exchanges so the prompt still begins with a user message.
            total -= counts[start]
            start += 1
            while start < len(messages) - 1 and messages[start].role != "user":
                total -= counts[start]
                start += 1
        while True:
            kept = messages[start:]
            prompt = self._render(kept)
            exact = self.require_engine().count_tokens([prompt])[0]
            if exact <= budget:
                break
            if start >= len(messages) - 1:
                raise ContextOverflowError(
                    f"the message is too long for the context window: the prompt needs {exact} tokens, "
                    f"the window holds {n_ctx} with {reserve} kept for the reply",
                    hint="shorten the message, or raise the context size (n_ctx) in the settings",
                )
            start += 1
        notices = [self.template_warning] if self.template_warning else []
        self.template_warning = None
        if start:
            notices.append(f"{start} older message{'s' if start != 1 else ''} no longer fit the {n_ctx}-token context "
                           "window and were left out of what the model sees")
        notice = "; ".join(notices) or None
        return TurnPlan(prompt, exact, start, notice, self._last_message_start(kept, prompt))

    # --- thinking -------------------------------------------------------------------------------

    def _thinking_template(self) -> ChatTemplate | None:
        if self.template is None or self.engine is None:
            return self.template
        return apply_thinking(self.template, self.engine.info, self.thinking, self.sampling)[0]

    def _thinking_sampling(self, sampling: SamplingParams) -> SamplingParams:
        if self.template is None or self.engine is None:
            return sampling
        return apply_thinking(self.template, self.engine.info, self.thinking, sampling)[1]

    def _last_message_start(self, messages: list[Message], prompt: Prompt) -> tuple[int, ...]:
        """Where the last message's text begins in the rendered prompt: where a render with other text in
        its place first differs. (Rendering the history alone would not do: a Qwen3.5 template renders the
        last reply's thought only while it is the last message.)"""
        if not isinstance(prompt, str) or not messages:
            return ()
        other = self._render([*messages[:-1], replace(messages[-1], content=_SENTINEL)])
        if not isinstance(other, str):
            return ()
        n = common_prefix(prompt, other)
        starts = [n] if 0 < n < len(prompt) else []
        # and where the generation prompt starts: the next turn's history renders the reply there without
        # the "<think>" a Qwen3.5 generation prompt ends with, so the prompts part just after it
        history = self._render(messages, add_generation_prompt=False)
        if isinstance(history, str) and prompt.startswith(history) and (starts[-1:] or [0])[-1] < len(history) < len(prompt):
            starts.append(len(history))
        return tuple(starts)

    # --- the state on disk: a conversation left in the sidebar resumes without evaluating it again ----

    def checkpoint_path(self) -> Path | None:
        """Next to the conversation store, one file per conversation and model."""
        if self.store is None or self.conversation_id is None or not self.model_id:
            return None
        return self.store.checkpoint_path(self.conversation_id, self.model_id)

    def resume_prefix(self) -> str | None:
        """The part of the next prompt that is known now: the history up to where a next message's text
        would begin (rendered with a stand-in message, so the template treats the history as it will)."""
        if not self.messages:
            return None
        prompt = self._render([*self.messages, Message("user", _SENTINEL)])
        if not isinstance(prompt, str):
            return None
        cut = prompt.rfind(_SENTINEL)
        return prompt[:cut] if cut > 0 else None

    def park(self) -> int:
        """Write the engine's state of this conversation to disk before it is left: the tokens covered."""
        engine, path, template = self.engine, self.checkpoint_path(), self.template
        if not isinstance(engine, StatefulEngine) or path is None or template is None or not engine.alive:
            return 0
        prefix = self.resume_prefix()
        if prefix is None:
            return 0
        try:
            n, note = engine.save_state(prefix, path, template.name)
        except LocalchatError as exc:
            n, note = 0, str(exc)
        if note:
            log.info("conversation %s: state not saved: %s", self.conversation_id, note)
        else:
            prune_checkpoints(path.parent)
        return n

    def unpark(self) -> int:
        """Offer this conversation's saved state to the engine (refused if stale: then the next turn is
        evaluated in full, as without one); the tokens it covers."""
        engine, path, template = self.engine, self.checkpoint_path(), self.template
        if not isinstance(engine, StatefulEngine) or path is None or template is None or not path.exists():
            return 0
        try:
            n, note = engine.load_state(path, template.name)
        except LocalchatError as exc:
            n, note = 0, str(exc)
        if note:
            log.info("conversation %s: saved state not used: %s", self.conversation_id, note)
        return n

    def _render(self, messages: list[Message], add_generation_prompt: bool = True) -> Prompt:
        full = ([Message("system", self.system)] if self.system else []) + list(messages)
        try:
            template = self._thinking_template()
            if template is None:
                raise LocalchatError("no model is loaded yet", hint="wait for the model to load, or pick one")
            return render(template, full, self.tools, add_generation_prompt)
        except TemplateError as exc:
            # A GGUF's own template can fail on a conversation its test render did not cover.
            from localchat.templates import native

            self.template = native("chatml")
            self.template_warning = f"the model's chat template failed ({exc.message}); using ChatML from now on"
            return render(self.template, full, self.tools, add_generation_prompt)

    def _count(self, messages: list[Message]) -> list[int]:
        missing = [m for m in messages if (m.role, m.content) not in self._token_cache]
        if missing:
            counts = self.require_engine().count_tokens([m.content for m in missing])
            for m, n in zip(missing, counts):
                self._token_cache[(m.role, m.content)] = n + _MESSAGE_OVERHEAD
        return [self._token_cache[(m.role, m.content)] for m in messages]

    # --- persistence ----------------------------------------------------------------------------

    def _persist_user(self, text: str) -> None:
        if self.store is None:
            return
        if self.conversation_id is None:
            self.conversation_id = self.store.create_conversation(model=self.model_id, system=self.system)
            for m in self.messages[:-1]:  # history imported from elsewhere (a swap keeps it anyway)
                self.store.add_message(self.conversation_id, m.role, m.content)
        self.store.add_message(self.conversation_id, "user", text)

    def _delete_from(self, position: int) -> None:
        if self.store is not None and self.conversation_id is not None:
            self.store.delete_messages_from(self.conversation_id, position)


# Conversation states on disk: a full state grows with the conversation (12 KiB a token for the 0.8B
# Qwen3.5 shape), so only the most recently left conversations keep theirs.
CHECKPOINT_DISK_BUDGET = 2 << 30


def prune_checkpoints(directory: Path, budget: int = CHECKPOINT_DISK_BUDGET) -> None:
    """Delete the least recently written checkpoint files until the rest fit `budget` (the newest stays)."""
    try:
        files = sorted(directory.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for i, f in enumerate(files):
            total += f.stat().st_size
            if i and total > budget:
                f.unlink(missing_ok=True)
    except OSError as exc:
        log.info("checkpoint files in %s not pruned: %s", directory, exc)


@dataclass
class ChatTurn:
    """One reply. Iterate it for the generation's events (TextDelta for answer text); afterwards `status`,
    `usage` and `text` (the answer) tell how it went."""

    session: ChatSession
    generation: Generation
    plan: TurnPlan
    writer: ReplyWriter | None = None
    text: str = ""
    reasoning: str = ""  # a reasoning model's thought, apart from the answer
    tool_calls: tuple[ToolCall, ...] = ()  # the calls it made (the session's tools)
    status: str = "streaming"  # streaming | complete | length | cancelled | error
    usage: Usage | None = None
    error: LocalchatError | None = None
    store_error: StoreError | None = None  # saving failed; the reply itself went on
    started: float = field(default_factory=time.monotonic)

    @property
    def notice(self) -> str | None:
        return self.plan.notice

    def cancel(self) -> None:
        """Stop the reply; safe from any thread. What was received is kept (marked cancelled)."""
        self.generation.cancel()

    def end_thought(self) -> bool:
        """Close a reasoning model's thought now; the answer follows (False when no thought is open)."""
        return self.generation.end_thought()

    def __iter__(self) -> Iterator[Event]:
        finished = False
        try:
            for event in self.generation:
                if type(event) is TextDelta:
                    self.text += event.text
                    if self.writer is not None:
                        self._save(self.writer.append, event.text)
                elif type(event) is ReasoningDelta:
                    self.reasoning += event.text
                    if self.writer is not None:
                        self._save(self.writer.append_reasoning, event.text)
                yield event
            self.usage = self.generation.usage
            self.tool_calls = tuple(getattr(self.generation, "tool_calls", ()))
            reason = self.generation.finish_reason or "stop"
            self.status = {"stop": "complete", "length": "length", "cancelled": "cancelled"}.get(reason, "complete")
            finished = True
        except EngineError as exc:
            self.status = "error"
            self.error = exc
            finished = True
            raise
        finally:
            if not finished:  # the consumer stopped iterating early (GeneratorExit) or failed
                self.generation.cancel()
                self.status = "cancelled"
            self._close()

    def run(self) -> str:
        for _ in self:
            pass
        return self.text

    def _save(self, fn: Callable[..., object], *args: object) -> None:
        """Write through to the store; a failing database must not cut the reply short."""
        try:
            fn(*args)
        except StoreError as exc:
            self.store_error = exc
            self.writer = None

    def _close(self) -> None:
        if self.writer is not None:
            stored_status = {"length": "complete"}.get(self.status, self.status)
            self._save(self.writer.finish, stored_status, self.usage.to_dict() if self.usage else None)
            self.writer = None
        self.session._finish(self)
