"""One line at the bottom: model, what is in effect on the hardware, speed of the last reply, context use."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    StatusBar.warn { color: $warning; }
    """

    model = reactive("no model")
    hardware = reactive("")
    speed = reactive("")
    context = reactive("")
    state = reactive("")

    def render(self) -> str:
        parts = [self.model, self.hardware, self.state, self.speed, self.context]
        return "  │  ".join(p for p in parts if p)

    def set_context(self, used: int, window: int, dropped: int) -> None:
        pct = used / window * 100 if window else 0
        text = f"ctx {used}/{window} ({pct:.0f}%)"
        if dropped:
            text += f", {dropped} old msg left out"
        self.context = text
        self.set_class(pct >= 80 or dropped > 0, "warn")
