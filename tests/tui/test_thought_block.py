"""The thought block on its own, driven by Pilot: live while it streams, folded to one line after, opened and
folded again by a click on its header."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from localchat.tui.widgets.thought import ThoughtBlock, ThoughtHeader

pytestmark = pytest.mark.asyncio


class OneThought(App):
    def compose(self) -> ComposeResult:
        yield ThoughtBlock(live=True)


async def test_streams_live_then_folds_and_opens_on_click():
    app = OneThought()
    async with app.run_test(size=(80, 20)) as pilot:
        block = app.query_one(ThoughtBlock)
        header = app.query_one(ThoughtHeader)
        body = block.query_one(".body")
        assert str(header.render()) == "▾ Thinking…" and not block.folded
        block.append("First step.\n")
        block.append("Second step.")
        await pilot.pause()
        assert block.text == "First step.\nSecond step." and body.display and body.size.height == 2

        block.finish(tokens=840, seconds=12.2)
        await pilot.pause()
        assert block.folded and str(header.render()) == "▸ Thought for 12 s · 840 tokens"
        assert body.size.height == 0 or not body.display

        await pilot.click(ThoughtHeader)
        await pilot.pause()
        assert not block.folded and str(header.render()).startswith("▾ Thought for 12 s")
        assert body.size.height == 2

        await pilot.click(ThoughtHeader)
        await pilot.pause()
        assert block.folded


async def test_a_thought_the_reader_is_looking_at_stays_open():
    app = OneThought()
    async with app.run_test(size=(80, 20)) as pilot:
        block = app.query_one(ThoughtBlock)
        block.append("Still reading this.")
        block.finish(tokens=5, fold=False)
        await pilot.pause()
        assert not block.folded and block.seconds is not None
        await pilot.click(ThoughtHeader)  # a click while live would do nothing; after the end it folds
        await pilot.pause()
        assert block.folded


async def test_a_live_thought_folds_on_click_and_counts_its_tokens():
    app = OneThought()
    async with app.run_test(size=(80, 20)) as pilot:
        block = app.query_one(ThoughtBlock)
        header = app.query_one(ThoughtHeader)
        block.append("A wall of thinking.")
        block.set_tokens(312)
        await pilot.pause()
        assert str(header.render()) == "▾ Thinking… 312 tokens"
        await pilot.click(ThoughtHeader)  # one need not watch it stream
        await pilot.pause()
        assert block.live and block.folded and str(header.render()) == "▸ Thinking… 312 tokens"
        block.append(" More.")
        block.finish(tokens=400, seconds=3.0, ended_early=True)
        await pilot.pause()
        assert block.text == "A wall of thinking. More."
        assert str(header.render()) == "▸ Thought for 3 s · 400 tokens (ended early)"
