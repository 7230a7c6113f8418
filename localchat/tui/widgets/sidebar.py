"""Saved conversations: a search field over a list. Shows what it is given; asks for everything by message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from localchat.tui.format import one_line

SEARCH_DELAY = 0.25  # seconds of no typing before a search runs


class ConversationOptions(OptionList):
    BINDINGS = [
        Binding("r", "rename", "Rename conversation"),
        Binding("delete,d", "delete", "Delete conversation"),
    ]

    def action_rename(self) -> None:
        self.parent_list.request("rename")

    def action_delete(self) -> None:
        self.parent_list.request("delete")

    @property
    def parent_list(self) -> "ConversationList":
        return self.query_ancestor(ConversationList)


class ConversationList(Vertical):
    DEFAULT_CSS = """
    ConversationList { width: 32; dock: left; border-right: vkey $panel-lighten-2; padding: 0 0 0 1; }
    ConversationList > Label { color: $text-muted; text-style: bold; padding: 0 1; }
    ConversationList > Input { margin: 0 1 0 0; }
    ConversationList > OptionList { height: 1fr; border: none; padding: 0; }
    """

    @dataclass
    class Open(Message):
        conversation_id: int

    @dataclass
    class Search(Message):
        query: str  # "" = show the list again

    @dataclass
    class Rename(Message):
        conversation_id: int
        title: str

    @dataclass
    class Delete(Message):
        conversation_id: int
        title: str

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._titles: dict[int, str] = {}
        self._search_timer = None
        self.current_id: int | None = None

    def compose(self) -> ComposeResult:
        yield Label("Conversations")
        yield Input(placeholder="Search…", id="search")
        yield ConversationOptions(id="conversations")

    @property
    def options(self) -> ConversationOptions:
        return self.query_one(ConversationOptions)

    def show_conversations(self, conversations: list[Any]) -> None:
        """Fill the list from ConversationSummary records (newest first)."""
        if self.query_one(Input).value.strip():
            return  # a search is on screen; the list comes back when the search is cleared
        self._titles = {c.id: c.title or "(untitled)" for c in conversations}
        options = [Option(self._label(c.id, c.title or "(untitled)", f"{c.message_count} messages"), id=str(c.id))
                   for c in conversations]
        self._fill(options, "No saved conversations yet")

    def show_hits(self, query: str, hits: list[Any]) -> None:
        if query != self.query_one(Input).value.strip():
            return  # an answer to an older query
        options, seen = [], set()
        for hit in hits:
            if hit.conversation_id in seen:
                continue
            seen.add(hit.conversation_id)
            self._titles[hit.conversation_id] = hit.title or "(untitled)"
            options.append(Option(self._label(hit.conversation_id, hit.title or "(untitled)", _around_match(hit, 28)),
                                  id=str(hit.conversation_id)))
        self._fill(options, f"Nothing matches “{query}”")

    def _label(self, cid: int, title: str, detail: str | Content) -> Content:
        marker = "▸ " if cid == self.current_id else "  "
        if isinstance(detail, str):
            detail = Content.styled(detail, "dim")
        return Content.assemble(marker + one_line(title, 26), "\n  ", detail)

    def _fill(self, options: list[Option], empty: str) -> None:
        ol = self.options
        highlighted = ol.highlighted_option.id if ol.highlighted_option is not None else None
        ol.clear_options()
        if options:
            ol.add_options(options)
            ids = [o.id for o in options]
            ol.highlighted = ids.index(highlighted) if highlighted in ids else 0
        else:
            ol.add_option(Option(Content.styled(empty, "dim"), disabled=True))

    def request(self, what: str) -> None:
        option = self.options.highlighted_option
        if option is None or option.id is None:
            return
        cid = int(option.id)
        title = self._titles.get(cid, "")
        self.post_message(self.Rename(cid, title) if what == "rename" else self.Delete(cid, title))

    def focus_search(self) -> None:
        self.query_one(Input).focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Open(int(event.option.id)))

    @on(Input.Changed, "#search")
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        query = event.value.strip()
        self._search_timer = self.set_timer(SEARCH_DELAY, lambda: self.post_message(self.Search(query)))

    @on(Input.Submitted, "#search")
    def _search_now(self, event: Input.Submitted) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        self.post_message(self.Search(event.value.strip()))
        self.options.focus()


def _around_match(hit: Any, width: int) -> Content:
    """The part of a search hit's snippet around its first match, the match underlined."""
    text = hit.snippet.replace("\n", " ")
    start, end = hit.highlights[0] if hit.highlights else (0, 0)
    left = max(0, min(start - (width - (end - start)) // 2, len(text) - width))
    window = text[left:left + width]
    content = Content.styled(window, "dim")
    if end > start:
        content = content.stylize("bold underline", max(0, start - left), max(0, min(width, end - left)))
    return content
