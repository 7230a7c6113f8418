"""The chat app with a remote engine: the same screens and flow as a local model (Pilot)."""

from __future__ import annotations

import asyncio

import pytest

from localchat.services import Services
from localchat.tui.app import make_app
from localchat.tui.widgets.chatlog import MessageBlock
from tests.support.models import register_local_model
from tests.support.pilot import loaded
from tests.support.server import add_remote

REPLY = "Hi 你好🙂!"


async def wait_for(predicate, pilot, timeout=60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await pilot.pause(0.05)


@pytest.mark.asyncio
async def test_the_app_chats_with_a_remote_engine(localchat_home, tiny_model, serve):
    register_local_model(localchat_home, tiny_model, "tiny")
    server = serve("--model", "tiny")
    add_remote(localchat_home, "cluster", server.v1, remote_model="tiny")
    app = make_app(Services.open(localchat_home), "cluster")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        for key in "hello":
            await pilot.press(key)
        await pilot.press("enter")
        await wait_for(lambda: not app.busy and [b for b in app.query(MessageBlock) if b.role == "assistant"], pilot)
        assert [b for b in app.query(MessageBlock) if b.role == "assistant"][-1].source == REPLY
    conv = Services.open(localchat_home).store.conversation(app.session.conversation_id)
    assert [(m.role, m.content) for m in conv.messages] == [("user", "hello"), ("assistant", REPLY)]
    assert conv.model == "cluster"
