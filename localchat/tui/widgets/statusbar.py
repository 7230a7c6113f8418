"""One line at the bottom: model and quant (and the thinking choice of a reasoning model), what is in effect on
the hardware, what is happening, the reply's tokens and speed (a thought counted apart from the answer), how much
of the prompt was reused from the cache, background tasks, and the context meter (warns from 80% and when older
turns were left out)."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

WARN_AT = 0.8


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: auto; max-height: 2; background: $panel; color: $text-muted; padding: 0 1; }
    StatusBar.warn { color: $text-warning; }
    StatusBar.busy { color: $text-accent; }
    """

    model = reactive("no model", layout=True)
    thinking = reactive("", layout=True)  # "think: on" for a reasoning model
    hardware = reactive("", layout=True)
    state = reactive("", layout=True)
    speed = reactive("", layout=True)
    prompt = reactive("", layout=True)  # tokens reused / evaluated for the turn
    tasks = reactive("", layout=True)
    context = reactive("", layout=True)

    def render(self) -> str:
        model = f"{self.model} · {self.thinking}" if self.thinking else self.model
        parts = [p for p in (model, self.hardware, self.state, self.speed, self.prompt, self.tasks, self.context) if p]
        return "\n".join(_lines(parts, self.content_size.width or 10_000))

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


def _lines(parts: list[str], width: int, sep: str = "  │  ") -> list[str]:
    """The parts on one line, or on two where one is too narrow: broken between parts, never inside one."""
    if len(sep.join(parts)) <= width:
        return [sep.join(parts)]
    first: list[str] = []
    for i, part in enumerate(parts):
        if first and len(sep.join([*first, part])) > width:
            return [sep.join(first), sep.join(parts[i:])]
        first.append(part)
    return [sep.join(first)]


def speed_line(thought: int | None, answer: int, rate: float, ttft: float | None = None,
               approximate: bool = False) -> str:
    """ "thought 840 · answer 120 tok · 35.0 tok/s": a reasoning model's tokens apart, "~" where estimated
    (thought None: a model that did not think this turn, as before: "35.0 tok/s")."""
    about = "~" if approximate else ""
    parts = [] if thought is None else [f"thought {about}{thought:,} · answer {about}{answer:,} tok"]
    if rate > 0:
        parts.append(f"{rate:.1f} tok/s")
    line = " · ".join(parts)
    if ttft is not None:
        line += f", TTFT {ttft * 1000:.0f} ms"
    return line


def prompt_line(prompt_tokens: int, evaluated: int) -> str:
    """ "prompt 2,851: 2,790 reused, 61 evaluated": what the cache saved this turn."""
    if prompt_tokens <= 0:
        return ""
    evaluated = min(max(evaluated, 0), prompt_tokens)
    return f"prompt {prompt_tokens:,}: {prompt_tokens - evaluated:,} reused, {evaluated:,} evaluated"
