"""The chat screen: saved conversations on the left, the conversation, the input, the status line.

Turns run in a thread worker through the app's ChatSession and come back as ReplyStarted/Delta/Finished
messages; the reply streams into its Markdown block through a ReplyStream (batched appends paced to what the
machine can afford, not a re-render per token), a reasoning model's thought into a ThoughtBlock above it. While
a thought streams, its tokens are counted once a second by the model's tokenizer (a thread worker) for the
status line. Store work (list, search, rename, delete, open) runs in thread workers too.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header

from localchat.errors import LocalchatError
from localchat import workspace as ws
from localchat.tui.events import (ConversationLoaded, ConversationsListed, Failed, ReplyDelta, SearchResults,
                                  TokensCounted, WorkspaceChanged)
from localchat.tui.screens.dialogs import ChoiceDialog, ConfirmDialog, TextDialog
from localchat.tui.streaming import ReplyBuffer, ReplyStream, cpu_share_for, resume_gc
from localchat.tui.widgets.chatlog import ChatLog, CopyRequested, MessageBlock, MessageView, Notice, StreamingReply
from localchat.tui.widgets.prompt import PromptInput
from localchat.tui.widgets.sidebar import ConversationList
from localchat.tui.widgets.statusbar import StatusBar, prompt_line, speed_line
from localchat.tui.widgets.thought import ThoughtBlock
from localchat.workspace import Refused, TurnKind

if TYPE_CHECKING:
    from localchat.engine.api import Engine
    from localchat.store import ConversationStore
    from localchat.types import Usage
    from localchat.workspace import Workspace

SIDEBAR_MIN_WIDTH = 100  # columns from which the conversation list shows by default
ENDINGS = {"cancelled": "stopped", "length": "stopped at max tokens", "error": "error"}
COUNT_INTERVAL = 1.0  # seconds between token counts of a streaming thought
THINKING_CYCLE = {"default": "on", "on": "off", "off": "default"}


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+l", "edit_last", "Edit last", show=False),
        Binding("ctrl+t", "copy_reply", "Copy reply", show=False),
        Binding("ctrl+g", "copy_code", "Copy code", show=False),
        Binding("ctrl+b", "toggle_sidebar", "Chats", show=False),
        Binding("ctrl+f", "search", "Search chats", show=False),
        Binding("f4", "toggle_thought", "Thought"),
        Binding("f5", "cycle_thinking", "Thinking on/off", show=False),
        # ctrl+s ("skip the thinking"): ctrl+e is the input's end-of-line key
        Binding("ctrl+s", "end_thought", "End thought", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._reply_block: MessageBlock | None = None
        self._reply: StreamingReply | None = None  # where the streaming reply's thought and answer go
        self._count_timer: Timer | None = None
        self._stream: ReplyStream | None = None
        self._editing = False
        self._pending_text = ""  # what was sent, to give back if the turn could not start
        self._turn_kind: TurnKind = "send"
        self._reply_open = False  # see `replying`
        self._waiting_notice: Notice | None = None  # "waiting for the model", until the reply starts

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal():
            yield ConversationList(id="sidebar")
            with Vertical(id="main"):
                yield ChatLog(id="chat")
                yield PromptInput(id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ConversationList).display = self.app.size.width >= SIDEBAR_MIN_WIDTH
        self.query_one(PromptInput).focus()

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def log_view(self) -> ChatLog:
        return self.query_one(ChatLog)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def sidebar(self) -> ConversationList:
        return self.query_one(ConversationList)

    # --- sending --------------------------------------------------------------------------------

    @property
    def workspace(self) -> Workspace:
        return self.app.workspace

    @property
    def replying(self) -> bool:
        """A reply's block is open: from the turn's start until its last text is drawn."""
        return self._reply_open

    def _refused(self, refused: Refused) -> None:
        self.notify(refused.reason, severity=refused.severity)

    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        kind: TurnKind = "edit" if self._editing else "send"
        outcome = self.workspace.request_turn(kind, event.text)
        if isinstance(outcome, Refused):
            self._refused(outcome)
            self.prompt.set_text(event.text)
            return
        if self._editing:
            self._end_editing()
            await self.log_view.drop_tail(include_last_user=True)
        self._turn_kind = kind
        self._pending_text = event.text
        self._reply_open = True
        await self.log_view.add_message("user", event.text)
        if outcome == "started":
            self.status.state = "thinking…"

    @on(WorkspaceChanged)
    async def _workspace_changed(self, message: WorkspaceChanged) -> None:
        change = message.change
        if isinstance(change, ws.TurnWaiting):
            self._waiting_notice = await self.log_view.add_notice(
                f"── waiting for the model: {change.model_id} is still loading; the message is answered as soon "
                "as it is ready ──", kind="info")
        elif isinstance(change, ws.ReplyStarted) and message.deltas is not None:
            await self._reply_started(change, message.deltas)
        elif isinstance(change, ws.ReplyFinished):
            await self._reply_finished(change)

    async def _drop_waiting_notice(self) -> None:
        notice, self._waiting_notice = self._waiting_notice, None
        if notice is not None:
            await notice.remove()

    async def _reply_started(self, event: ws.ReplyStarted, deltas: ReplyBuffer) -> None:
        await self._drop_waiting_notice()
        self._reply_open = True
        if event.notice:
            await self.log_view.add_notice(event.notice)
            self.notify(event.notice, title="Context window full", severity="warning", timeout=8)
        self._reply_block = await self.log_view.add_message("assistant", author=event.model_id)
        view = self._reply_block.parent
        assert isinstance(view, MessageView)
        self._reply = StreamingReply(self.log_view, view)
        share = cpu_share_for(event.info, os.cpu_count())
        self._stream = ReplyStream(self._reply, deltas.take, share).start()
        self.status.state = "replying…"
        self.status.prompt = ""
        self.app.show_context(event.prompt_tokens)
        self._stop_counting()
        self._count_timer = self.set_interval(COUNT_INTERVAL, self._count_live)

    @on(ReplyDelta)
    def _reply_delta(self, event: ReplyDelta) -> None:
        if self._stream is not None:
            self._stream.wake()

    # --- counting a thought's tokens -----------------------------------------------------------

    def _count_live(self) -> None:
        reply, engine = self._reply, self.workspace.engine
        if reply is None or reply.thought is None or engine is None:
            return  # a model that does not think: the status line shows the rate at the end, as always
        self.status.state = "thinking…" if reply.thinking else "replying…"
        self._count_worker(engine, reply, reply.thought.text, reply.view.block.source, None)

    @work(thread=True, exclusive=True, group="count", exit_on_error=False)
    def _count_worker(self, engine: Engine, reply: StreamingReply, thought: str, answer: str,
                      usage: Usage | None) -> None:
        if usage is not None and usage.reasoning_tokens is not None:  # the engine counted the thought itself
            thought_tokens = min(usage.reasoning_tokens, usage.completion_tokens)
            answer_tokens = usage.completion_tokens - thought_tokens
            self.post_message(TokensCounted(reply, thought_tokens, answer_tokens, usage, approximate=False))
            return
        # Else estimate: the text tokenized again. That need not cut as the model generated it, so at the end
        # the turn's exact total is shared out in the same proportion.
        try:
            thought_tokens, answer_tokens = engine.count_tokens([thought, answer]) if answer else (
                engine.count_tokens([thought])[0], 0)
        except LocalchatError:
            return  # the model went away (a swap): the counts are not worth an error
        if usage is not None:
            counted = thought_tokens + answer_tokens
            thought_tokens = round(usage.completion_tokens * thought_tokens / counted) if counted else 0
            answer_tokens = usage.completion_tokens - thought_tokens
        self.post_message(TokensCounted(reply, thought_tokens, answer_tokens, usage))

    @on(TokensCounted)
    def _tokens_counted(self, event: TokensCounted) -> None:
        reply, usage = event.reply, event.usage
        thought = reply.thought
        about = event.approximate
        if thought is not None:
            thought.set_tokens(event.thought, about)
        if usage is not None:
            self.status.speed = speed_line(event.thought, event.answer, usage.tokens_per_second, usage.ttft, about)
        elif reply is self._reply:  # the rate comes with the turn's own timings at the end ("tok/s": it ended)
            self.status.speed = speed_line(event.thought, event.answer, 0.0, approximate=about)

    async def _reply_finished(self, event: ws.ReplyFinished) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self._stop_counting()
        reply, self._reply = self._reply, None
        if reply is not None and reply.thought is not None:
            reply.end_thought()  # a reply that was all thought folds at its end
            self.app.model_thought()
        await self._drop_waiting_notice()
        block, self._reply_block = self._reply_block, None
        if not event.started and self._turn_kind != "regenerate":  # not sent: the message goes back to the input
            await self.log_view.drop_tail(include_last_user=True)
            text = event.text or self._pending_text
            if text and not self.prompt.text:
                self.prompt.set_text(text)
        elif block is not None and event.status in ("cancelled", "error"):
            block.parent.mark(event.status)
        if event.note:
            await self.log_view.add_notice(f"── {event.note} ──", kind="info")
        usage = event.usage
        if usage is not None and usage.completion_tokens:
            self.status.speed = speed_line(None, usage.completion_tokens, usage.tokens_per_second, usage.ttft)
            self.app.show_context(usage.prompt_tokens + usage.completion_tokens)
            engine = self.workspace.engine
            if reply is not None and reply.thought is not None and engine is not None:
                self._count_worker(engine, reply, reply.thought.text, reply.view.block.source, usage)
        if usage is not None:
            self.status.prompt = prompt_line(usage.prompt_tokens, usage.prompt_eval_tokens)
        if not self.workspace.loading and not event.note:  # else the status line says what the load does/did
            self.status.state = ENDINGS.get(event.status, "")
        if event.error:
            self.notify(event.error, title="Reply failed", severity="error", timeout=15)
        if event.warning:
            self.notify(event.warning, title="The reply was not saved", severity="warning", timeout=15)
        self._reply_open = False
        self.refresh_conversations()

    def _stop_counting(self) -> None:
        if self._count_timer is not None:
            self._count_timer.stop()
            self._count_timer = None

    def on_unmount(self) -> None:
        if self._stream is not None:
            self._stream.abandon()
        resume_gc()  # also one still waiting to resume after the last reply

    def note(self, text: str) -> None:
        """A line in the conversation that is not a message (e.g. which model continues it)."""
        self.run_worker(self.log_view.add_notice(f"── {text} ──", kind="info"), group="notes")

    # --- actions --------------------------------------------------------------------------------

    def action_stop(self) -> None:
        if self.workspace.stop():
            self.status.state = "stopping…"
        elif self._editing:
            self._end_editing()
            self.prompt.clear()

    async def action_new_chat(self) -> None:
        self.action_stop()
        self._end_editing()
        self.workspace.new_session()
        await self.log_view.clear_messages()
        self.status.speed = self.status.prompt = ""
        self.app.show_context(0)
        self.sidebar.current_id = None
        self.refresh_conversations()
        self.prompt.focus()

    async def action_regenerate(self) -> None:
        outcome = self.workspace.request_turn("regenerate")
        if isinstance(outcome, Refused):
            self._refused(outcome)
            return
        self._turn_kind = "regenerate"
        self._pending_text = ""
        self._reply_open = True
        await self.log_view.drop_tail(include_last_user=False)
        if outcome == "started":
            self.status.state = "thinking…"

    @on(PromptInput.EditLast)
    def action_edit_last(self) -> None:
        refused = self.workspace.refuse_if_busy()
        if refused is not None:
            self._refused(refused)
            return
        last = self.workspace.last_user_message()
        if last is None:
            self.notify("there is no message to edit yet", severity="warning")
            return
        self._editing = True
        self.prompt.add_class("editing")
        self.prompt.set_text(last)
        self.prompt.focus()
        self.status.state = "editing the last message: Enter resends it, Esc cancels"

    def _end_editing(self) -> None:
        if self._editing:
            self._editing = False
            self.prompt.remove_class("editing")
            self.status.state = ""

    def action_copy_reply(self) -> None:
        block = self.log_view.last_block("assistant")
        if block is None or not block.source:
            self.notify("there is no reply to copy yet", severity="warning")
            return
        self._copy(block.source, "reply")

    def action_copy_code(self) -> None:
        block = self.log_view.last_block("assistant")
        codes = block.code_blocks if block is not None else []
        if not codes:
            self.notify("the last reply has no code block", severity="warning")
            return
        if len(codes) == 1:
            self._copy(codes[0], "code block")
            return

        def chosen(index: int | None) -> None:
            if index is not None:
                self._copy(codes[index], "code block")

        previews = [f"{i + 1}. {(c.strip().splitlines() or [''])[0][:60]}  ({len(c.splitlines())} lines)"
                    for i, c in enumerate(codes)]
        self.app.push_screen(ChoiceDialog("Copy which code block?", previews), chosen)

    @on(CopyRequested)
    def _copy_requested(self, event: CopyRequested) -> None:
        self._copy(event.text, event.what)

    def _copy(self, text: str, what: str) -> None:
        self.app.copy_to_clipboard(text)
        lines = len(text.splitlines())
        self.notify(f"copied the {what} ({lines} line{'s' if lines != 1 else ''}) to the clipboard", timeout=3)

    def action_toggle_thought(self) -> None:
        """Open or fold the last thought (a click on a thought's header does the same for that one)."""
        thought = self.log_view.last_thought()
        if thought is None:
            self.notify("no reply in this conversation has a thought to open", severity="warning", timeout=3)
            return
        thought.toggle()
        if not thought.folded:  # show it from its first line, once it has its new height
            self.call_after_refresh(self.log_view.scroll_to_widget, thought, animate=False, top=True)

    def action_cycle_thinking(self) -> None:
        """Thinking for the loaded model: default -> on -> off -> default, saved in the config for that model."""
        from localchat.tui.screens.settings import set_thinking

        model_id = self.workspace.model_id
        if model_id is None:
            self.notify("no model is loaded", severity="warning", timeout=3)
            return
        if not self.app.reasoning_model:
            self.notify(f"{model_id} does not think (its template has no thought tags): nothing to switch",
                        severity="warning", timeout=4)
            return
        config = self.app.services.config
        choice = THINKING_CYCLE[config.thinking_for(model_id)]
        set_thinking(config, model_id, None if choice == config.thinking else choice)  # same as all: no override
        self.app.save_config()
        self.workspace.settings_saved(False, "thinking")
        self.app.show_thinking()
        what = {"default": "as the model's template decides", "on": "on", "off": "off"}[choice]
        self.notify(f"thinking {what} for {model_id}, from the next reply", timeout=3)

    def action_toggle_sidebar(self) -> None:
        self.sidebar.display = not self.sidebar.display
        if self.sidebar.display:
            self.sidebar.options.focus()
        else:
            self.prompt.focus()

    def action_search(self) -> None:
        self.sidebar.display = True
        self.sidebar.focus_search()

    # --- conversations --------------------------------------------------------------------------

    def refresh_conversations(self) -> None:
        store = self.workspace.store
        if store is not None:
            self._list_worker(store)

    @work(thread=True, exclusive=True, group="list", exit_on_error=False)
    def _list_worker(self, store: ConversationStore) -> None:
        try:
            self.post_message(ConversationsListed(store.list_conversations(limit=200)))
        except LocalchatError as exc:
            self.post_message(Failed("Could not list conversations", str(exc)))

    @on(ConversationsListed)
    def _listed(self, event: ConversationsListed) -> None:
        self.sidebar.current_id = self.workspace.session.conversation_id
        self.sidebar.show_conversations(event.conversations)

    @on(ConversationList.Search)
    def _search(self, event: ConversationList.Search) -> None:
        store = self.workspace.store
        if store is None:
            return
        if not event.query:
            self.refresh_conversations()
        else:
            self._search_worker(store, event.query)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _search_worker(self, store: ConversationStore, query: str) -> None:
        try:
            self.post_message(SearchResults(query, store.search(query, limit=100)))
        except LocalchatError as exc:
            self.post_message(Failed("Search failed", str(exc)))

    @on(SearchResults)
    def _results(self, event: SearchResults) -> None:
        self.sidebar.show_hits(event.query, event.hits)

    @on(ConversationList.Open)
    def _open(self, event: ConversationList.Open) -> None:
        refused = self.workspace.refuse_if_busy()
        store = self.workspace.store
        if refused is not None:
            self._refused(refused)
        elif store is not None:
            self._open_worker(store, event.conversation_id)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def _open_worker(self, store: ConversationStore, conversation_id: int) -> None:
        try:
            self.post_message(ConversationLoaded(store.conversation(conversation_id)))
        except LocalchatError as exc:
            self.post_message(Failed("Could not open the conversation", str(exc)))

    @on(ConversationLoaded)
    async def _loaded(self, event: ConversationLoaded) -> None:
        conv = event.conversation
        self._end_editing()
        self.workspace.open_conversation(conv)
        self.app.show_context(0)
        chat = self.log_view
        await chat.clear_messages()
        for m in conv.messages:
            if m.content or m.reasoning:
                author = (m.model or None) if m.role == "assistant" else None
                thought = (ThoughtBlock(m.reasoning, m.reasoning_tokens, m.thinking_seconds)
                           if m.role == "assistant" and m.reasoning else None)  # folded
                block = await chat.add_message(m.role, m.content, author=author, thought=thought)
                if m.status in ("cancelled", "error"):
                    block.parent.mark(m.status)
        chat.scroll_end(animate=False)
        self.status.speed = self.status.prompt = ""
        self.sidebar.current_id = conv.id
        self.refresh_conversations()
        self.prompt.focus()

    @on(ConversationList.Rename)
    def _rename(self, event: ConversationList.Rename) -> None:
        def renamed(title: str | None) -> None:
            if title:
                self._store_worker("rename", event.conversation_id, title)

        self.app.push_screen(TextDialog("Rename conversation", event.title), renamed)

    @on(ConversationList.Delete)
    def _delete(self, event: ConversationList.Delete) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self._store_worker("delete", event.conversation_id)

        self.app.push_screen(ConfirmDialog("Delete conversation?", f"“{event.title}” and all its messages will be "
                                           "deleted. This cannot be undone.", "Delete", danger=True), confirmed)

    @work(thread=True, group="store", exit_on_error=False)
    def _store_worker(self, op: str, conversation_id: int, title: str = "") -> None:
        store = self.workspace.store
        if store is None:  # the sidebar lists nothing before the store is open
            return
        try:
            if op == "rename":
                store.rename(conversation_id, title)
            else:
                store.delete(conversation_id)
        except LocalchatError as exc:
            self.post_message(Failed(f"Could not {op} the conversation", str(exc)))
            return
        if op == "delete" and conversation_id == self.workspace.session.conversation_id:
            self.app.call_from_thread(self.run_action, "new_chat")
        else:
            self.app.call_from_thread(self.refresh_conversations)

    # --- reasoning models: end the thought now (issue 14) ---------------------------------------------

    def action_end_thought(self) -> None:
        """Close the reply's thought now, so the model answers; a bell when no thought is open."""
        turn = self.workspace.turn
        if turn is None or not turn.end_thought():
            self.app.bell()
        elif self._reply is not None and self._reply.thinking:
            self._reply.ended_early = True  # its folded line says so
