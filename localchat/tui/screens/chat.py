"""The chat screen: saved conversations on the left, the conversation, the input, the status line.

Turns run in a thread worker through the app's ChatSession and come back as ReplyStarted/Delta/Finished
messages; the reply streams into its Markdown block through a ReplyStream (batched appends paced to what the
machine can afford, not a re-render per token). Store work (list, search, rename, delete, open) runs in thread
workers too.
"""

from __future__ import annotations

import os

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from localchat.engine.api import TextDelta
from localchat.errors import LocalchatError
from localchat.tui.events import (ConversationLoaded, ConversationsListed, Failed, ReplyDelta, ReplyFinished,
                                  ReplyStarted, SearchResults)
from localchat.tui.screens.dialogs import ChoiceDialog, ConfirmDialog, TextDialog
from localchat.tui.streaming import DeltaBuffer, ReplyStream, cpu_share_for, resume_gc
from localchat.tui.widgets.chatlog import ChatLog, CopyRequested, MessageBlock
from localchat.tui.widgets.prompt import PromptInput
from localchat.tui.widgets.sidebar import ConversationList
from localchat.tui.widgets.statusbar import StatusBar

SIDEBAR_MIN_WIDTH = 100  # columns from which the conversation list shows by default
ENDINGS = {"cancelled": "stopped", "length": "stopped at max tokens", "error": "error"}


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
    ]

    def __init__(self) -> None:
        super().__init__()
        self._reply_block: MessageBlock | None = None
        self._stream: ReplyStream | None = None
        self._deltas: DeltaBuffer | None = None
        self._editing = False
        self._stop_requested = False
        self._pending_text = ""  # what was sent, to give back if the turn could not start
        self._turn_kind = "send"

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

    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        app = self.app
        if app.busy:
            self.notify("a reply is still streaming: press Esc to stop it first", severity="warning")
            self.prompt.set_text(event.text)
            return
        if not app.ready_to_chat(event.text):
            self.prompt.set_text(event.text)
            return
        kind = "edit" if self._editing else "send"
        if self._editing:
            self._end_editing()
            await self.log_view.drop_tail(include_last_user=True)
        await self.log_view.add_message("user", event.text)
        self._start_turn(kind, event.text)

    def _start_turn(self, kind: str, text: str = "") -> None:
        self.app.busy = True
        self._stop_requested = False  # Esc pressed before the worker has a turn to cancel
        self._turn_kind = kind
        self._pending_text = text
        self.status.state = "thinking…"
        self._turn_worker(kind, text)

    @work(thread=True, exclusive=True, group="reply", exit_on_error=False)
    def _turn_worker(self, kind: str, text: str) -> None:
        session = self.app.session
        try:
            if kind == "regenerate":
                turn = session.regenerate()
            elif kind == "edit":
                turn = session.edit_last(text)
            else:
                turn = session.send(text)
        except LocalchatError as exc:
            self.post_message(ReplyFinished("error", None, str(exc), started=False))
            return
        except Exception as exc:  # a bug must not leave the app stuck "busy"
            self.app.log_exception(exc)
            self.post_message(ReplyFinished("error", None, f"internal error: {exc!r}", started=False))
            return
        self.app.turn = turn
        if self._stop_requested:
            turn.cancel()
        buffer = DeltaBuffer(lambda: self.post_message(ReplyDelta()))
        self._deltas = buffer
        self.post_message(ReplyStarted(turn.notice, turn.plan.prompt_tokens))
        try:
            for event in turn:
                if isinstance(event, TextDelta):
                    buffer.put(event.text)
        except LocalchatError as exc:
            self.post_message(ReplyFinished("error", turn.usage, str(exc)))
            return
        except Exception as exc:
            self.app.log_exception(exc)
            self.post_message(ReplyFinished("error", turn.usage, f"internal error: {exc!r}"))
            return
        store_error = getattr(turn, "store_error", None)
        self.post_message(ReplyFinished(turn.status, turn.usage, warning=str(store_error) if store_error else None))

    @on(ReplyStarted)
    async def _reply_started(self, event: ReplyStarted) -> None:
        if event.notice:
            await self.log_view.add_notice(event.notice)
            self.notify(event.notice, title="Context window full", severity="warning", timeout=8)
        self._reply_block = await self.log_view.add_message("assistant", author=self.app.model_id)
        share = cpu_share_for(self.app.engine.info, os.cpu_count())
        self._stream = ReplyStream(self._reply_block, self._deltas.take, share).start()
        self.status.state = "replying…"
        self.app.show_context(event.prompt_tokens)

    @on(ReplyDelta)
    def _reply_delta(self, event: ReplyDelta) -> None:
        if self._stream is not None:
            self._stream.wake()

    @on(ReplyFinished)
    async def _reply_finished(self, event: ReplyFinished) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self._deltas = None
        block, self._reply_block = self._reply_block, None
        app = self.app
        app.turn = None
        app.busy = False
        if not event.started and self._turn_kind != "regenerate":  # not sent: the message goes back to the input
            await self.log_view.drop_tail(include_last_user=True)
            if self._pending_text and not self.prompt.text:
                self.prompt.set_text(self._pending_text)
        elif block is not None and event.status in ("cancelled", "error"):
            block.parent.mark(event.status)
        usage = event.usage
        if usage is not None and usage.completion_tokens:
            self.status.speed = f"{usage.tokens_per_second:.1f} tok/s, TTFT {usage.ttft * 1000:.0f} ms"
            app.show_context(usage.prompt_tokens + usage.completion_tokens)
        self.status.state = ENDINGS.get(event.status, "")
        if event.error:
            self.notify(event.error, title="Reply failed", severity="error", timeout=15)
        if event.warning:
            self.notify(event.warning, title="The reply was not saved", severity="warning", timeout=15)
        app.reply_finished()
        self.refresh_conversations()

    def on_unmount(self) -> None:
        if self._stream is not None:
            self._stream.abandon()
        resume_gc()  # also one still waiting to resume after the last reply

    def note(self, text: str) -> None:
        """A line in the conversation that is not a message (e.g. which model continues it)."""
        self.run_worker(self.log_view.add_notice(f"── {text} ──", kind="info"), group="notes")

    # --- actions --------------------------------------------------------------------------------

    def action_stop(self) -> None:
        if self.app.turn is not None:
            self.app.turn.cancel()
            self.status.state = "stopping…"
        elif self.app.busy:
            self._stop_requested = True
            if self.app.turn is not None:  # the worker handed its turn over meanwhile
                self.app.turn.cancel()
            self.status.state = "stopping…"
        elif self._editing:
            self._end_editing()
            self.prompt.clear()

    async def action_new_chat(self) -> None:
        self.action_stop()
        self._end_editing()
        self.app.new_session()
        await self.log_view.clear_messages()
        self.status.speed = ""
        self.app.show_context(0)
        self.sidebar.current_id = None
        self.refresh_conversations()
        self.prompt.focus()

    async def action_regenerate(self) -> None:
        app = self.app
        if app.busy:
            self.notify("a reply is still streaming: press Esc to stop it first", severity="warning")
            return
        if not any(m.role == "user" for m in app.session.messages):
            self.notify("there is no message to answer yet: send one first", severity="warning")
            return
        if not app.ready_to_chat("regenerate"):
            return
        await self.log_view.drop_tail(include_last_user=False)
        self._start_turn("regenerate")

    @on(PromptInput.EditLast)
    def action_edit_last(self) -> None:
        app = self.app
        if app.busy:
            self.notify("a reply is still streaming: press Esc to stop it first", severity="warning")
            return
        last = next((m for m in reversed(app.session.messages) if m.role == "user"), None)
        if last is None:
            self.notify("there is no message to edit yet", severity="warning")
            return
        self._editing = True
        self.prompt.add_class("editing")
        self.prompt.set_text(last.content)
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
        if self.app.store is not None:
            self._list_worker()

    @work(thread=True, exclusive=True, group="list", exit_on_error=False)
    def _list_worker(self) -> None:
        try:
            self.post_message(ConversationsListed(self.app.store.list_conversations(limit=200)))
        except LocalchatError as exc:
            self.post_message(Failed("Could not list conversations", str(exc)))

    @on(ConversationsListed)
    def _listed(self, event: ConversationsListed) -> None:
        self.sidebar.current_id = self.app.session.conversation_id
        self.sidebar.show_conversations(event.conversations)

    @on(ConversationList.Search)
    def _search(self, event: ConversationList.Search) -> None:
        if self.app.store is None:
            return
        if not event.query:
            self.refresh_conversations()
        else:
            self._search_worker(event.query)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _search_worker(self, query: str) -> None:
        try:
            self.post_message(SearchResults(query, self.app.store.search(query, limit=100)))
        except LocalchatError as exc:
            self.post_message(Failed("Search failed", str(exc)))

    @on(SearchResults)
    def _results(self, event: SearchResults) -> None:
        self.sidebar.show_hits(event.query, event.hits)

    @on(ConversationList.Open)
    def _open(self, event: ConversationList.Open) -> None:
        if self.app.busy:
            self.notify("a reply is still streaming: press Esc to stop it first", severity="warning")
            return
        self._open_worker(event.conversation_id)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def _open_worker(self, conversation_id: int) -> None:
        try:
            self.post_message(ConversationLoaded(self.app.store.conversation(conversation_id)))
        except LocalchatError as exc:
            self.post_message(Failed("Could not open the conversation", str(exc)))

    @on(ConversationLoaded)
    async def _loaded(self, event: ConversationLoaded) -> None:
        conv = event.conversation
        self._end_editing()
        self.app.open_conversation(conv)
        chat = self.log_view
        await chat.clear_messages()
        for m in conv.messages:
            if m.content:
                author = (m.model or None) if m.role == "assistant" else None
                block = await chat.add_message(m.role, m.content, author=author)
                if m.status in ("cancelled", "error"):
                    block.parent.mark(m.status)
        chat.scroll_end(animate=False)
        self.status.speed = ""
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
        try:
            if op == "rename":
                self.app.store.rename(conversation_id, title)
            else:
                self.app.store.delete(conversation_id)
        except LocalchatError as exc:
            self.post_message(Failed(f"Could not {op} the conversation", str(exc)))
            return
        if op == "delete" and conversation_id == self.app.session.conversation_id:
            self.app.call_from_thread(self.run_action, "new_chat")
        else:
            self.app.call_from_thread(self.refresh_conversations)
