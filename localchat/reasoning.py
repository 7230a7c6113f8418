"""Reasoning models: tell a reply's thought from its answer, as the text streams.

A reasoning model (Qwen3, Qwen3.5, QwQ, DeepSeek-R1 distills) writes `<think>thought</think>answer`. Some
templates open the thought in the generation prompt already (Qwen3.5, QwQ: the prompt ends in `<think>\\n`),
so the reply starts mid-thought and only `</think>` appears. A thought may never close (max tokens, a stop
string, a cancel): then the whole reply is thought and the answer is empty.

Whether a model reasons is decided from its vocabulary (the tags are tokens of their own) and its chat
template (it writes the tags), never from its name. A model that does not reason gets no splitter at all.

Pure and stdlib-only: the engine worker, the remote client and the tests use it alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from localchat.engine.api import ReasoningDelta, TextDelta

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"
SWITCH = "enable_thinking"  # the chat-template variable Qwen3 and Qwen3.5 read

Split = TextDelta | ReasoningDelta
Thinking = Literal["on", "off", "default"]


@dataclass(frozen=True, slots=True)
class ReasoningFormat:
    """How a model marks its thought. `switch`: the template variable that turns thinking on and off (None:
    the template has none, so "off" is done by closing the thought at once)."""

    open_tag: str = OPEN_TAG
    close_tag: str = CLOSE_TAG
    switch: str | None = None

    def opens_in_thought(self, prompt: str) -> bool:
        """Whether the prompt leaves a thought open, so the reply starts inside it (Qwen3.5, QwQ, DeepSeek-R1:
        the generation prompt ends in `<think>\n`). Only the end counts: a user may write the tag in a message."""
        return prompt.rstrip().endswith(self.open_tag)

    def splitter(self, prompt: str = "") -> "ReasoningSplitter":
        return ReasoningSplitter(self.open_tag, self.close_tag, self.opens_in_thought(prompt))


def detect(template: str | None, is_single_token: Callable[[str], bool] | None = None) -> ReasoningFormat | None:
    """The model's reasoning format, or None for a model that does not reason.

    It reasons when its chat template writes the closing tag (it knows thoughts exist), or when its vocabulary
    holds both tags as tokens of their own (a model trained to think, whatever its template says)."""
    source = template or ""
    in_template = CLOSE_TAG in source
    in_vocab = is_single_token is not None and is_single_token(OPEN_TAG) and is_single_token(CLOSE_TAG)
    if not (in_template or in_vocab):
        return None
    return ReasoningFormat(switch=SWITCH if SWITCH in source else None)


def of_model(chat_template: str | None, think_tags: list[int] | None) -> ReasoningFormat | None:
    """detect() for a loaded model: its template, and its vocabulary as the worker found it (ModelInfo.think_tags
    is set when both tags are tokens of their own)."""
    return detect(chat_template, (lambda _tag: True) if think_tags else None)


def template_kwargs(fmt: ReasoningFormat | None, thinking: Thinking) -> dict[str, bool]:
    """What the template is rendered with for a thinking choice: only the model's own switch, and only when
    the user chose; "default" leaves the template's default (Qwen3: thinking on)."""
    if fmt is None or fmt.switch is None or thinking == "default":
        return {}
    return {fmt.switch: thinking == "on"}


class ReasoningSplitter:
    """Turns answer text pieces, split anywhere (inside a tag too), into ReasoningDelta / TextDelta events.

    The newlines the templates put around the tags (`<think>\\n…\\n</think>\\n\\n`) are not part of either
    text: the thought and the answer come out as the template's own history parser would cut them, so that
    rendering them back gives the model's bytes."""

    __slots__ = ("open_tag", "close_tag", "state", "held", "newlines", "closed")

    # before: nothing but whitespace yet, the reply may open a thought; thought: inside it; answer: after it
    # (or a reply that never opened one), where every piece passes straight through.

    def __init__(self, open_tag: str = OPEN_TAG, close_tag: str = CLOSE_TAG, in_thought: bool = False) -> None:
        self.open_tag = open_tag
        self.close_tag = close_tag
        self.state = "thought_start" if in_thought else "before"
        self.held = ""  # text that may be the start of a tag, or leading whitespace
        self.newlines = ""  # newlines at the end of the thought so far: shown only if more thought follows
        self.closed = False  # the reply closed a thought

    @property
    def in_thought(self) -> bool:
        return self.state in ("thought", "thought_start")

    def feed(self, piece: str) -> list[Split]:
        if self.state == "answer":
            return [TextDelta(piece)] if piece else []
        out: list[Split] = []
        text = self.held + piece
        self.held = ""
        while text:
            if self.state == "before":
                text = self._before(text, out)
            elif self.state == "answer_start":
                stripped = text.lstrip("\n")
                if stripped:
                    self.state = "answer"
                    out.append(TextDelta(stripped))
                text = ""
            else:
                text = self._thought(text, out)
        return out

    def finish(self) -> list[Split]:
        """Whatever is held at the end of the reply: a partial tag is text after all."""
        held, self.held = self.held, ""
        if not held:
            return []
        if self.in_thought:  # an unclosed thought that ends in what looked like the start of the tag
            return [ReasoningDelta(self.newlines + held)] if held.strip("\n") else []
        self.state = "answer"  # whitespace, or a tag's start, and nothing more: it was the answer
        return [TextDelta(held)] if held.strip() else []

    def _before(self, text: str, out: list[Split]) -> str:
        stripped = text.lstrip()
        if not stripped or self.open_tag.startswith(stripped):
            self.held = text  # whitespace, or the tag so far: wait for more
            return ""
        if stripped.startswith(self.open_tag):
            self.state = "thought_start"
            return stripped[len(self.open_tag):]
        self.state = "answer"
        out.append(TextDelta(text))
        return ""

    def _thought(self, text: str, out: list[Split]) -> str:
        if self.state == "thought_start":
            text = text.lstrip("\n")
            if not text:
                return ""
            self.state = "thought"
        end = text.find(self.close_tag)
        if end >= 0:
            self._emit_thought(text[:end], out, final=True)
            self.closed = True
            self.state = "answer_start"
            return text[end + len(self.close_tag):]
        keep = _partial_suffix(text, self.close_tag)
        if keep:
            self.held = text[-keep:]
            text = text[:-keep]
        self._emit_thought(text, out, final=False)
        return ""

    def _emit_thought(self, text: str, out: list[Split], final: bool) -> None:
        if not text:
            return
        body = text.rstrip("\n")
        if final:
            if body:
                out.append(ReasoningDelta(self.newlines + body))
            self.newlines = ""
            return
        if not body:
            self.newlines += text
            return
        out.append(ReasoningDelta(self.newlines + body))
        self.newlines = text[len(body):]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag` (what may continue into it)."""
    first = tag[0]
    start = max(0, len(text) - len(tag) + 1)
    while True:
        i = text.find(first, start)
        if i < 0:
            return 0
        if tag.startswith(text[i:]):
            return len(text) - i
        start = i + 1


class ThoughtControl:
    """The decode loop's view of a reasoning model's thought, by token id (an int compare per token).

    It counts the thought's tokens, and closes the thought by feeding `close_tokens` (the tokens of
    "\n</think>\n\n") instead of sampling when the budget is spent or the user asks to end it now; the model
    then writes its answer, so an answer is never empty because thinking used the whole allowance."""

    __slots__ = ("open_id", "close_id", "close_tokens", "in_thought", "budget", "thought_tokens", "forcing",
                 "end_requested", "closed")

    def __init__(self, open_id: int, close_id: int, close_tokens: list[int], in_thought: bool = False,
                 budget: int | None = None) -> None:
        self.open_id = open_id
        self.close_id = close_id
        self.close_tokens = close_tokens
        self.in_thought = in_thought
        self.budget = budget
        self.thought_tokens = 0
        self.forcing: list[int] = []  # tokens still to feed in place of sampled ones
        self.end_requested = False  # set from another thread (the worker's reader): checked at the next token
        self.closed = False
        if in_thought and budget is not None and budget <= 0:
            self.forcing = list(close_tokens)

    def end_now(self) -> None:
        self.end_requested = True

    def saw(self, token: int) -> None:
        """After each token (sampled or forced) is chosen."""
        if token == self.open_id and not self.closed:
            self.in_thought = True
        if not self.in_thought:
            return
        self.thought_tokens += 1
        if token == self.close_id:
            self.in_thought = False
            self.closed = True
        elif not self.forcing and (self.end_requested or (self.budget is not None
                                                          and self.thought_tokens >= self.budget)):
            self.forcing = list(self.close_tokens)


def thought_line(tokens: int | None, seconds: float | None) -> str:
    """ "Thought for 12 s · 840 tokens": a folded thought in the TUI, and its title in exports."""
    parts = ["Thought" + (f" for {seconds:.0f} s" if seconds is not None else "")]
    if tokens:
        parts.append(f"{tokens:,} tokens")
    return " · ".join(parts)


def split_reply(text: str, fmt: ReasoningFormat | None = None, in_thought: bool = False) -> tuple[str, str]:
    """(thought, answer) of a whole reply: what the splitter streams, joined."""
    if fmt is None:
        fmt = ReasoningFormat()
    splitter = ReasoningSplitter(fmt.open_tag, fmt.close_tag, in_thought)
    thought: list[str] = []
    answer: list[str] = []
    for event in [*splitter.feed(text), *splitter.finish()]:
        (thought if isinstance(event, ReasoningDelta) else answer).append(event.text)
    return "".join(thought), "".join(answer)
