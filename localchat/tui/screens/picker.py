"""Quick swap: a fuzzy picker of the installed models. Ctrl+O then Enter goes back to the previous model."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.fuzzy import Matcher
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option


@dataclass(frozen=True)
class PickerItem:
    model_id: str
    detail: str  # "Q4_K_M · 491.4 MB · 32k"


class ModelPicker(ModalScreen["str | None"]):
    """Returns the chosen model id, or None."""

    DEFAULT_CSS = """
    ModelPicker { align: center top; }
    ModelPicker > Vertical {
        width: 80; max-width: 95%; height: auto; max-height: 70%; margin-top: 3;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    ModelPicker Label { color: $text-muted; padding: 0 1; }
    ModelPicker OptionList { height: auto; max-height: 20; border: none; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("down", "move(1)", show=False),
        Binding("up", "move(-1)", show=False),
    ]

    def __init__(self, items: list[PickerItem], current: str | None, previous: str | None) -> None:
        super().__init__()
        self.items = items
        self.current = current
        self.previous = previous

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Input(placeholder="Switch to model…")
            yield OptionList()
            yield Label("Enter switches · Esc cancels · the conversation continues on the new model")

    def on_mount(self) -> None:
        self._filter("")
        self.query_one(Input).focus()

    def _filter(self, query: str) -> None:
        matcher = Matcher(query) if query else None
        scored = []
        for order, item in enumerate(self.items):
            score = matcher.match(item.model_id) if matcher else 1.0
            if score > 0:
                scored.append((-score, order, item))
        scored.sort(key=lambda s: (s[0], s[1]))
        options = []
        for _, _, item in scored:
            name = matcher.highlight(item.model_id) if matcher else Content(item.model_id)
            tag = "  (current)" if item.model_id == self.current else ""
            options.append(Option(Content.assemble(name, (f"  {item.detail}{tag}", "dim")), id=item.model_id))
        ol = self.query_one(OptionList)
        ol.clear_options()
        if not options:
            ol.add_option(Option(Content.styled(f"no installed model matches “{query}”", "dim"), disabled=True))
            return
        ol.add_options(options)
        ids = [o.id for o in options]
        # Without a query, offer the model used before this one: Ctrl+O, Enter toggles between two models.
        preferred = self.previous if not query and self.previous in ids else None
        if preferred is None and not query and self.current in ids and len(ids) > 1:
            preferred = next(i for i in ids if i != self.current)
        ol.highlighted = ids.index(preferred) if preferred else 0

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self._filter(event.value.strip())

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        option = self.query_one(OptionList).highlighted_option
        if option is not None and option.id is not None:
            self.dismiss(option.id)

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_move(self, step: int) -> None:
        ol = self.query_one(OptionList)
        if ol.option_count:
            ol.highlighted = ((ol.highlighted or 0) + step) % ol.option_count
