"""One line at the bottom: model and quant, what is in effect on the hardware, what is happening, the speed of
the last reply, background tasks, and the context meter (warns from 80% and when older turns were left out)."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

WARN_AT = 0.8


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    StatusBar.warn { color: $text-warning; }
    StatusBar.busy { color: $text-accent; }
    """

    model = reactive("no model")
    hardware = reactive("")
    state = reactive("")
    speed = reactive("")
    tasks = reactive("")
    context = reactive("")

    def render(self) -> str:
        parts = [self.model, self.hardware, self.state, self.speed, self.tasks, self.context]
        return "  │  ".join(p for p in parts if p)

    def set_context(self, used: int, window: int, dropped: int) -> None:
        fraction = used / window if window else 0.0
        text = f"ctx {used}/{window} ({fraction * 100:.0f}%)"
        if fraction >= WARN_AT:
            text += " nearly full"
        if dropped:
            text += f", {dropped} old msg left out"
        self.context = text
        self.set_class(fraction >= WARN_AT or dropped > 0, "warn")

    def clear_context(self) -> None:
        self.context = ""
        self.remove_class("warn")
