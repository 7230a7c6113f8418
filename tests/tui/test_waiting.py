"""A message typed while the model is still loading: answered once it is ready, handed back if the load fails."""

import threading

import pytest

from localchat.errors import EngineError
from localchat.tui.app import make_app
from localchat.tui.widgets.chatlog import Notice
from tests.support.models import register_local_model
from tests.support.pilot import blocks, loaded, record_notifications, reply, send, status, wait_for

pytestmark = pytest.mark.asyncio


def hold_loading(svc, fail: bool = False) -> threading.Event:
    """Make the model's load wait for the returned event (then load it for real, or fail as a worker would)."""
    go = threading.Event()
    start = svc.start_engine

    def held(model_id, **overrides):
        assert go.wait(60)
        if fail:
            raise EngineError(f"{model_id} could not be loaded: the file is damaged",
                              hint="run `localchat verify` and pull it again")
        return start(model_id, **overrides)

    svc.start_engine = held
    return go


def notices(app) -> list[str]:
    return [str(n.render()) for n in app.chat.query(Notice)]


async def test_a_message_sent_while_loading_is_answered_when_the_model_is_ready(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    go = hold_loading(svc)
    app = make_app(svc, "tiny")
    seen = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: "loading tiny" in status(app), pilot)
        await send(pilot, "hello")
        # It shows at once, with a line saying it waits for the model; nothing is refused.
        await wait_for(lambda: blocks(app, "user") and any("waiting for the model" in n for n in notices(app)), pilot)
        assert blocks(app, "user")[-1].source == "hello" and app.chat.prompt.text == ""
        assert app.busy and not blocks(app, "assistant")
        assert not any("still loading" in s or s.startswith("warning") for s in seen)
        # Another message meanwhile is refused the way a second message during a reply is.
        await send(pilot, "more")
        await wait_for(lambda: any("press Esc" in s for s in seen), pilot)
        assert app.chat.prompt.text == "more"
        await pilot.press(*["backspace"] * 4)
        go.set()
        block = await reply(app, pilot)
        assert block.source == "Hi 你好🙂!"
        assert not any("waiting for the model" in n for n in notices(app))
        assert [m.content for m in app.session.messages] == ["hello", "Hi 你好🙂!"]
        assert [m.content for m in app.store.conversation(app.session.conversation_id).messages] == \
            ["hello", "Hi 你好🙂!"]


async def test_a_failed_load_gives_the_waiting_message_back(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    go = hold_loading(svc, fail=True)
    app = make_app(svc, "tiny")
    seen = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: "loading tiny" in status(app), pilot)
        await send(pilot, "keep this question")
        await wait_for(lambda: any("waiting for the model" in n for n in notices(app)), pilot)
        go.set()
        await wait_for(lambda: not app.busy and app.loading is None, pilot)
        await wait_for(lambda: app.chat.prompt.text == "keep this question", pilot)
        assert not blocks(app, "user")  # not sent: it is back in the input, nothing lost
        assert any("tiny failed to load" in n and "back in the input" in n for n in notices(app))
        assert any(s.startswith("error|tiny failed to load") and "damaged" in s for s in seen)
        assert "failed to load" in status(app)
        assert app.session.messages == []


async def test_esc_takes_back_a_message_waiting_for_the_model(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    go = hold_loading(svc)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: "loading tiny" in status(app), pilot)
        await send(pilot, "on second thought")
        await wait_for(lambda: any("waiting for the model" in n for n in notices(app)), pilot)
        await pilot.press("escape")
        await wait_for(lambda: not app.busy and app.chat.prompt.text == "on second thought", pilot)
        assert not blocks(app, "user") and not notices(app)
        go.set()
        await loaded(app, pilot)
        assert not blocks(app, "assistant") and app.session.messages == []
