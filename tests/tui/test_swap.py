"""Quick swap: two keystrokes pick another installed model; the conversation continues on it."""

import pytest

from localchat.tui.app import make_app
from localchat.tui.screens.picker import ModelPicker
from tests.support.ggufgen import make_tiny_gguf
from tests.support.models import register_endless, register_local_model
from tests.support.pilot import blocks, loaded, reply, send, status, wait_for

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    return make_tiny_gguf(tmp_path_factory.mktemp("other") / "other.gguf", reply="Yo!")


async def test_ctrl_o_enter_swaps_and_the_conversation_continues(localchat_home, tiny_model, other_model):
    register_local_model(localchat_home, tiny_model, model_id="tiny")
    svc = register_local_model(localchat_home, other_model, model_id="other")
    app = make_app(svc, "tiny")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot, "tiny")
        await send(pilot, "hello")
        await reply(app, pilot)
        first_engine = app.engine
        conversation = app.session.conversation_id

        await pilot.press("ctrl+o")
        assert isinstance(app.screen, ModelPicker)
        await pilot.press("enter")  # the other installed model is offered first
        await wait_for(lambda: "loading other" in status(app) or app.model_id == "other", pilot)
        await loaded(app, pilot, "other")
        assert "other" in status(app)
        await wait_for(lambda: first_engine._proc.poll() is not None, pilot)  # the old worker process ended

        await send(pilot, "and you?")
        block = await reply(app, pilot, 2)
        assert block.source == "Yo!"
        assert [m.content for m in app.session.messages] == ["hello", "Hi 你好🙂!", "and you?", "Yo!"]
        assert app.session.conversation_id == conversation
        stored = app.store.conversation(conversation).messages
        assert [m.model for m in stored if m.role == "assistant"] == ["tiny", "other"]
        assert [v.author for v in app.chat.log_view.views() if v.role == "assistant"] == ["tiny", "other"]

        await pilot.press("ctrl+o", "enter")  # and back: the previous model is offered first
        await loaded(app, pilot, "tiny")
        await send(pilot, "back")
        assert (await reply(app, pilot, 3)).source == "Hi 你好🙂!"


async def test_picker_filters_by_typing_and_escape_cancels(localchat_home, tiny_model, other_model):
    register_local_model(localchat_home, tiny_model, model_id="tiny")
    svc = register_local_model(localchat_home, other_model, model_id="other")
    app = make_app(svc, "other")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot, "other")
        await pilot.press("ctrl+o", "escape")
        assert not isinstance(app.screen, ModelPicker) and app.loading is None
        await pilot.press("ctrl+o", "t", "i", "n")
        picker = app.screen
        assert [o.id for o in picker.query_one("OptionList")._options] == ["tiny"]
        await pilot.press("enter")
        await loaded(app, pilot, "tiny")


async def test_switch_from_the_command_palette(localchat_home, tiny_model, other_model):
    register_local_model(localchat_home, tiny_model, model_id="tiny")
    svc = register_local_model(localchat_home, other_model, model_id="other")
    app = make_app(svc, "tiny")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot, "tiny")
        await pilot.press("ctrl+p")
        for ch in "switch to other":
            await pilot.press("space" if ch == " " else ch)
        await pilot.pause(0.5)
        await pilot.press("enter")
        await loaded(app, pilot, "other")
        await send(pilot, "hi")
        assert (await reply(app, pilot)).source == "Yo!"


async def test_swapping_during_a_reply_stops_it_cleanly(localchat_home, endless_model, other_model):
    register_endless(localchat_home, endless_model)
    svc = register_local_model(localchat_home, other_model, model_id="other")
    app = make_app(svc, "chatty")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot, "chatty")
        await send(pilot, "talk")
        await wait_for(lambda: blocks(app, "assistant") and len(blocks(app, "assistant")[-1].source) > 10, pilot)
        first_engine = app.engine
        await pilot.press("ctrl+o", "enter")
        await loaded(app, pilot, "other")
        await wait_for(lambda: not app.busy, pilot)
        view = app.chat.log_view.views()[-1]
        assert view.has_class("cancelled") and not view.has_class("error")
        await wait_for(lambda: first_engine._proc.poll() is not None, pilot)
        await send(pilot, "hi")
        assert (await reply(app, pilot, 2)).source == "Yo!"
        assert app.chat.query("Notice")  # "continuing with other"
