"""The real app under Textual's Pilot: type, send, watch the reply stream in, stop it."""

import asyncio

import pytest

from localchat.tui.app import make_app
from localchat.tui.widgets.chatlog import MessageBlock
from localchat.tui.widgets.statusbar import StatusBar
from tests.support.models import register_local_model


async def wait_for(predicate, pilot, timeout=60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await pilot.pause(0.05)


def blocks(app, role):
    return [b for b in app.query(MessageBlock) if b.role == role]


async def send(pilot, text):
    for ch in text:
        await pilot.press(ch if ch != " " else "space")
    await pilot.press("enter")


@pytest.mark.asyncio
async def test_chat_turn_streams_the_reply(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await send(pilot, "hello")
        await wait_for(lambda: blocks(app, "assistant") and not app.busy, pilot)
        assert blocks(app, "user")[-1].source == "hello"
        assert blocks(app, "assistant")[-1].source == "Hi 你好🙂!"
        status = app.query_one(StatusBar).render()
        assert "tiny" in status and "tok/s" in status and "TTFT" in status and "ctx " in status
        # A second turn goes through the same worker and keeps the conversation.
        await send(pilot, "again")
        await wait_for(lambda: len(blocks(app, "assistant")) == 2 and not app.busy, pilot)
        assert [m.role for m in app.session.messages] == ["user", "assistant", "user", "assistant"]


@pytest.mark.asyncio
async def test_escape_stops_a_reply_and_keeps_what_was_said(localchat_home, tiny_loop_model):
    svc = register_local_model(localchat_home, tiny_loop_model, model_id="chatty")
    app = make_app(svc, "chatty")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await send(pilot, "talk")
        await wait_for(lambda: blocks(app, "assistant") and len(blocks(app, "assistant")[-1].source) > 20, pilot)
        await pilot.press("escape")
        await wait_for(lambda: not app.busy, pilot)
        reply = blocks(app, "assistant")[-1]
        assert reply.has_class("cancelled")
        assert reply.source.startswith("abcdefgh ")
        assert app.session.messages[-1].role == "assistant"
        assert "stopped" in app.query_one(StatusBar).render()


@pytest.mark.asyncio
async def test_a_model_that_fails_to_load_is_a_notification_not_a_crash(localchat_home, tmp_path):
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + b"\x00" * 64)
    svc = register_local_model(localchat_home, bogus, model_id="broken")
    app = make_app(svc, "broken")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: "failed to load" in app.query_one(StatusBar).render(), pilot)
        assert app.is_running
        await send(pilot, "hello")
        assert not blocks(app, "assistant")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_real_smollm2_answers_in_the_app(localchat_home, smollm2_installed):
    svc = __import__("localchat.services", fromlist=["Services"]).Services.open(localchat_home)
    app = make_app(svc, smollm2_installed)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await send(pilot, "What is the capital of France?")
        await wait_for(lambda: blocks(app, "assistant") and not app.busy, pilot, timeout=120)
        reply = blocks(app, "assistant")[-1].source
        assert len(reply.strip()) > 0
        assert app.session.messages[-1].content == reply
