"""Driving the real app under Pilot: wait for a condition, type and send, find message blocks."""

from __future__ import annotations

import asyncio

from localchat.tui.widgets.chatlog import MessageBlock, MessageView
from localchat.tui.widgets.statusbar import StatusBar


async def wait_for(predicate, pilot, timeout: float = 120.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await pilot.pause(0.02)


async def type_text(pilot, text: str) -> None:
    for ch in text:
        await pilot.press({" ": "space", "\n": "ctrl+j"}.get(ch, ch))


async def send(pilot, text: str) -> None:
    await type_text(pilot, text)
    await pilot.press("enter")


async def loaded(app, pilot, model_id: str | None = None, timeout: float = 120.0) -> None:
    await wait_for(lambda: app.engine is not None and app.loading is None
                   and (model_id is None or app.model_id == model_id), pilot, timeout, "model loaded")


async def reply(app, pilot, count: int = 1, timeout: float = 120.0) -> MessageBlock:
    """Wait until `count` assistant replies are on screen and the last one has finished."""
    await wait_for(lambda: len(blocks(app, "assistant")) >= count and not app.busy, pilot, timeout, "reply")
    return blocks(app, "assistant")[-1]


def blocks(app, role: str) -> list[MessageBlock]:
    return [b for b in app.chat.query(MessageBlock) if b.role == role]


def views(app) -> list[MessageView]:
    return list(app.chat.query(MessageView))


def status(app) -> str:
    return str(app.chat.query_one(StatusBar).render())


def record_notifications(app) -> list[str]:
    """Every notification the app shows from now on, as "title: message" (they expire on screen)."""
    seen: list[str] = []
    notify = app.notify

    def recording(message, *, title="", severity="information", **kwargs):
        seen.append(f"{severity}|{title}: {message}")
        return notify(message, title=title, severity=severity, **kwargs)

    app.notify = recording
    return seen
