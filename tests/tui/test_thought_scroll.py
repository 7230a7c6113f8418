"""A reasoning reply streaming into the chat pane, driven by Pilot without a model: the thought streams into a
ThoughtBlock above the answer and folds when the answer begins; the pane follows while the reader is at the
bottom and never moves while they have scrolled up (thought or answer)."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from localchat.tui.streaming import ReplyBuffer, ReplyStream
from localchat.tui.widgets.chatlog import ChatLog, MessageView, StreamingReply
from localchat.tui.widgets.thought import ThoughtBlock
from tests.support.pilot import wait_for

pytestmark = pytest.mark.asyncio


class Pane(App):
    def compose(self) -> ComposeResult:
        yield ChatLog()


async def _conversation(app: Pane, pilot, turns: int = 12) -> ChatLog:
    log = app.query_one(ChatLog)
    for i in range(turns):  # enough to scroll
        await log.add_message("user", f"question {i}")
        await log.add_message("assistant", f"answer {i}\n\nwith a second paragraph")
    await pilot.pause()
    return log


async def _reply(app: Pane, log: ChatLog) -> tuple[StreamingReply, ReplyBuffer, ReplyStream]:
    block = await log.add_message("assistant", author="thinker")
    view = block.parent
    assert isinstance(view, MessageView)
    reply = StreamingReply(log, view)
    buffer = ReplyBuffer(lambda: app.call_later(stream.wake))
    stream = ReplyStream(reply, buffer.take).start()
    return reply, buffer, stream


def _at_bottom(log: ChatLog) -> bool:
    return log.max_scroll_y > 0 and log.scroll_y == log.max_scroll_y


async def test_thought_streams_then_folds_and_the_pane_follows_at_the_bottom():
    app = Pane()
    async with app.run_test(size=(80, 24)) as pilot:
        log = await _conversation(app, pilot)
        reply, buffer, stream = await _reply(app, log)
        for i in range(8):
            buffer.put(f"step {i} of the thought\n", thought=True)
        await wait_for(lambda: reply.thought is not None and reply.thought.text.count("step") == 8, pilot, 10)
        thought = reply.thought
        assert thought is not None and thought.live and not thought.folded
        await wait_for(lambda: _at_bottom(log), pilot, 5, "following the thought")
        assert thought.text.endswith("step 7 of the thought\n")

        buffer.put("The answer.")
        await stream.stop()
        await pilot.pause()
        assert thought.folded and not thought.live and reply.view.block.source == "The answer."
        assert str(thought.query_one("ThoughtHeader").render()).startswith("▸ Thought for ")
        await wait_for(lambda: _at_bottom(log), pilot, 5, "following the answer")


async def test_streaming_never_moves_the_view_when_scrolled_up():
    app = Pane()
    async with app.run_test(size=(80, 24)) as pilot:
        log = await _conversation(app, pilot)
        reply, buffer, stream = await _reply(app, log)
        buffer.put("first line of the thought\n", thought=True)
        await wait_for(lambda: reply.thought is not None and _at_bottom(log), pilot, 10)

        log.focus()
        await pilot.press("pageup")  # as the reader does (the wheel releases the anchor the same way)
        await pilot.pause()
        assert not log.following
        held = log.scroll_y
        for i in range(20):  # the thought grows below the view
            buffer.put(f"more thought {i}\n", thought=True)
        await wait_for(lambda: reply.thought is not None and "more thought 19" in reply.thought.text, pilot, 10)
        await pilot.pause()
        assert log.scroll_y == held and log.max_scroll_y > held
        buffer.put("The answer, ")
        buffer.put("in two pieces.")
        await wait_for(lambda: reply.view.block.source == "The answer, in two pieces.", pilot, 10)
        await pilot.pause()
        assert log.scroll_y == held
        thought = reply.thought
        assert thought is not None and thought.folded  # out of view: folding it moves nothing on screen

        # Back at the bottom, the pane follows again.
        await pilot.press("end")
        await pilot.pause()
        assert log.following
        buffer.put("\n\n" + "\n\n".join(f"more answer {i}" for i in range(10)))
        await stream.stop()
        await pilot.pause()
        await wait_for(lambda: _at_bottom(log), pilot, 5, "following again")


async def test_a_thought_the_reader_has_scrolled_to_stays_open_when_the_answer_begins():
    app = Pane()
    async with app.run_test(size=(80, 24)) as pilot:
        log = await _conversation(app, pilot, turns=4)
        reply, buffer, stream = await _reply(app, log)
        for i in range(30):
            buffer.put(f"thought line {i}\n", thought=True)
        await wait_for(lambda: reply.thought is not None and "line 29" in reply.thought.text, pilot, 10)
        await pilot.pause()
        thought = reply.thought
        assert thought is not None
        log.scroll_to_widget(thought, animate=False, top=True)  # the reader goes up to read it
        await pilot.pause()
        held = log.scroll_y
        assert not log.following and log.in_view(thought)
        buffer.put("The answer.")
        await stream.stop()
        await pilot.pause()
        assert not thought.live and not thought.folded and log.scroll_y == held


async def test_a_reply_that_does_not_think_gets_no_thought_block():
    app = Pane()
    async with app.run_test(size=(80, 24)) as pilot:
        log = await _conversation(app, pilot, turns=1)
        reply, buffer, stream = await _reply(app, log)
        buffer.put("Just an answer.")
        await stream.stop()
        reply.end_thought()
        await pilot.pause()
        assert reply.thought is None and not list(app.query(ThoughtBlock))
        assert reply.view.block.source == "Just an answer."


async def test_a_reply_starting_while_scrolled_up_leaves_the_view_but_sending_jumps_to_the_end():
    app = Pane()
    async with app.run_test(size=(80, 24)) as pilot:
        log = await _conversation(app, pilot)
        log.focus()
        await pilot.press("pageup")
        await pilot.pause()
        held = log.scroll_y
        assert not log.following and held < log.max_scroll_y
        reply, buffer, stream = await _reply(app, log)  # the reply (and a notice) arrive while reading above
        await log.add_notice("── 2 older messages were left out ──", kind="info")
        buffer.put("a thought\n", thought=True)
        buffer.put("an answer")
        await stream.stop()
        await pilot.pause()
        assert log.scroll_y == held and not log.following
        await log.add_message("user", "my next question")  # the reader acted: show the end
        await pilot.pause()
        assert log.following
        await wait_for(lambda: _at_bottom(log), pilot, 5, "at the end after sending")


class Bar(App):
    def compose(self) -> ComposeResult:
        from localchat.tui.widgets.statusbar import StatusBar

        yield StatusBar()


async def test_a_long_status_line_takes_a_second_line_broken_between_parts():
    from localchat.tui.widgets.statusbar import StatusBar, prompt_line, speed_line

    app = Bar()
    async with app.run_test(size=(120, 10)) as pilot:
        bar = app.query_one(StatusBar)
        bar.model, bar.thinking, bar.hardware = "thinker Q4_K_M", "think: on", "CPU, flash attn off"
        await pilot.pause()
        assert bar.size.height == 1
        bar.speed = speed_line(840, 120, 35.04, 0.12, approximate=True)
        bar.prompt = prompt_line(2851, 61)
        bar.set_context(3000, 8192, 0)
        await pilot.pause()
        lines = str(bar.render()).split("\n")
        assert bar.size.height == 2 and len(lines) == 2 and all(len(line) <= 118 for line in lines)
        assert lines[0].startswith("thinker Q4_K_M · think: on  │  CPU, flash attn off  │  thought ~840 · answer ~120 tok")
        assert "35.0 tok/s, TTFT 120 ms" in lines[0]
        assert lines[1] == "prompt 2,851: 2,790 reused, 61 evaluated  │  ctx 3000/8192 (37%)"


async def test_a_thought_the_user_ended_says_so_when_it_folds():
    app = Pane()
    async with app.run_test(size=(80, 24)) as pilot:
        log = await _conversation(app, pilot, turns=1)
        reply, buffer, stream = await _reply(app, log)
        buffer.put("thinking and thinking", thought=True)
        await wait_for(lambda: reply.thinking, pilot, 10)
        reply.ended_early = True  # what ChatScreen.action_end_thought sets while the thought is live
        buffer.put("The answer.")
        await stream.stop()
        await pilot.pause()
        thought = reply.thought
        assert thought is not None and thought.folded
        assert str(thought.query_one("ThoughtHeader").render()).endswith("(ended early)")
