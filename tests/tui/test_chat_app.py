"""The chat screen with the real app and a tiny real model: stream, stop, regenerate, edit, copy, failures."""

import pytest

from localchat.services import Services
from localchat.tui.app import make_app
from tests.support.models import register_endless, register_local_model
from tests.support.pilot import blocks, loaded, record_notifications, reply, send, status, views, wait_for

pytestmark = pytest.mark.asyncio


async def test_chat_turn_streams_the_reply(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        await send(pilot, "hello")
        block = await reply(app, pilot)
        assert blocks(app, "user")[-1].source == "hello"
        assert block.source == "Hi 你好🙂!"
        line = status(app)
        assert "tiny" in line and "tok/s" in line and "TTFT" in line and "ctx " in line and "CPU" in line
        # A second turn goes through the same worker and keeps the conversation.
        await send(pilot, "again")
        await reply(app, pilot, 2)
        assert [m.role for m in app.session.messages] == ["user", "assistant", "user", "assistant"]
        # Both turns are in the store, and the sidebar lists the conversation under its first message.
        conv = app.store.conversation(app.session.conversation_id)
        assert [m.content for m in conv.messages] == ["hello", "Hi 你好🙂!", "again", "Hi 你好🙂!"]
        await wait_for(lambda: app.chat.sidebar.options.option_count == 1
                       and "hello" in str(app.chat.sidebar.options.get_option_at_index(0).prompt), pilot)


async def test_multiline_input_and_sending_while_loading(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    seen = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        await pilot.press("a", "shift+enter", "b", "ctrl+j", "c", "enter")
        await reply(app, pilot)
        assert blocks(app, "user")[-1].source == "a\nb\nc"
        assert app.session.messages[0].content == "a\nb\nc"
    assert not [s for s in seen if s.startswith("error")]


async def test_escape_stops_a_reply_and_keeps_what_was_said(localchat_home, endless_model):
    svc = register_endless(localchat_home, endless_model)
    app = make_app(svc, "chatty")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        await send(pilot, "talk")
        # Esc at once: the tiny model writes its whole window in well under a second, so waiting for text
        # first would race the end of the reply on a busy machine.
        await pilot.press("escape")
        await wait_for(lambda: not app.busy, pilot)
        view = views(app)[-1]
        assert view.has_class("cancelled")
        assert ("abcdefgh " * 300).startswith(view.block.source)
        assert app.session.messages[-1].role == "assistant"
        assert "stopped" in status(app)
        stored = app.store.conversation(app.session.conversation_id).messages[-1]
        assert stored.status == "cancelled" and stored.content == view.block.source


async def test_regenerate_and_edit_last(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        await send(pilot, "first")
        await reply(app, pilot)
        await pilot.press("ctrl+r")
        await wait_for(lambda: not app.busy and len(views(app)) == 2 and blocks(app, "assistant")[-1].source, pilot)
        assert [v.role for v in views(app)] == ["user", "assistant"]
        assert [m.role for m in app.session.messages] == ["user", "assistant"]

        await pilot.press("ctrl+l")  # edit last: the message comes back into the input
        assert app.chat.prompt.text == "first"
        assert "editing" in status(app)
        await pilot.press("end", "!", "enter")
        await wait_for(lambda: not app.busy and blocks(app, "assistant") and blocks(app, "user")[-1].source == "first!"
                       and blocks(app, "assistant")[-1].source, pilot)
        assert [v.role for v in views(app)] == ["user", "assistant"]
        assert [m.content for m in app.session.messages] == ["first!", "Hi 你好🙂!"]
        stored = app.store.conversation(app.session.conversation_id).messages
        assert [m.content for m in stored] == ["first!", "Hi 你好🙂!"]

        await pilot.press("up")  # on an empty input, up edits the last message too; Esc gives up editing
        assert app.chat.prompt.text == "first!"
        await pilot.press("escape")
        assert app.chat.prompt.text == "" and "editing" not in status(app)


async def test_copy_reply_and_code_blocks(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    store = svc.store
    cid = store.create_conversation(model="tiny")
    store.add_message(cid, "user", "show me code")
    store.add_message(cid, "assistant", "Two ways:\n\n```python\nprint('a')\n```\n\nor\n\n```sh\necho b\n```\n")
    app = make_app(svc, "tiny")
    async with app.run_test(size=(110, 34)) as pilot:
        await loaded(app, pilot)
        await wait_for(lambda: app.chat.sidebar.options.option_count == 1, pilot)
        app.chat.sidebar.options.focus()
        await pilot.press("enter")  # open the saved conversation
        await wait_for(lambda: len(blocks(app, "assistant")) == 1, pilot)
        await pilot.pause()
        assert blocks(app, "assistant")[0].code_blocks == ["print('a')", "echo b"]
        await pilot.press("ctrl+t")
        assert app.clipboard.startswith("Two ways:")
        await pilot.press("ctrl+g")  # two code blocks: a dialog asks which
        await pilot.press("down", "enter")
        assert app.clipboard == "echo b"
        fence = blocks(app, "assistant")[0].query("CodeFence").first()
        await pilot.click(fence)
        assert app.clipboard == "print('a')"


@pytest.mark.slow  # starts a worker (llama.cpp refuses the file)
async def test_a_model_that_fails_to_load_is_a_notification_not_a_crash(localchat_home, tmp_path):
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + b"\x00" * 64)
    svc = register_local_model(localchat_home, bogus, model_id="broken")
    app = make_app(svc, "broken")
    seen = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: "failed to load" in status(app), pilot)
        assert app.is_running
        await send(pilot, "hello")
        assert not blocks(app, "assistant") and not blocks(app, "user")
        assert app.chat.prompt.text == "hello"  # nothing lost
    assert any(s.startswith("error|broken failed to load") for s in seen)


async def test_context_meter_warns_and_tells_when_old_turns_are_left_out(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    svc.config.load = {"n_ctx": 256}
    svc.config.sampling = {"max_tokens": 16}
    app = make_app(svc, "tiny")
    seen = record_notifications(app)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(app, pilot)
        assert app.engine.info.n_ctx == 256
        for i in range(4):
            await send(pilot, f"w{i} " + "x" * 30)
            await reply(app, pilot, i + 1)
        assert app.session.dropped > 0
        assert "old msg left out" in status(app)
        assert app.chat.status.has_class("warn")
        assert any("no longer fit" in s for s in seen)
        assert app.chat.query("Notice")
        # A message that cannot fit even alone is refused with a hint, and given back to the input.
        await send(pilot, "y" * 400)
        await wait_for(lambda: not app.busy, pilot)
        assert any("too long for the context window" in s for s in seen)
        assert app.chat.prompt.text == "y" * 400
        assert blocks(app, "user")[-1].source != "y" * 400


async def test_a_crashed_worker_is_reported_and_reloaded(localchat_home, endless_model):
    svc = register_endless(localchat_home, endless_model)
    app = make_app(svc, "chatty")
    seen = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        await send(pilot, "talk")
        await wait_for(lambda: blocks(app, "assistant") and blocks(app, "assistant")[-1].source, pilot)
        app.engine._proc.kill()
        await wait_for(lambda: not app.busy, pilot)
        assert views(app)[-1].has_class("error")
        assert any(s.startswith("error|Reply failed") and "stopped unexpectedly" in s for s in seen)
        old = app.engine
        await send(pilot, "again")  # the dead worker is noticed and the model loads again; the text stays
        await wait_for(lambda: app.engine is not old and app.engine is not None and app.loading is None, pilot)
        assert app.chat.prompt.text == "again"
        await pilot.press("enter")
        await wait_for(lambda: blocks(app, "user")[-1].source == "again" and len(views(app)) == 4
                       and len(blocks(app, "assistant")[-1].source) > 0, pilot)  # the new worker answers
        await pilot.press("escape")
        await wait_for(lambda: not app.busy, pilot)


async def test_new_chat_starts_an_empty_conversation(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        await send(pilot, "hello")
        await reply(app, pilot)
        first = app.session.conversation_id
        await pilot.press("ctrl+n")
        assert not views(app) and app.session.messages == [] and app.session.conversation_id is None
        await send(pilot, "another")
        await reply(app, pilot)
        assert app.session.conversation_id not in (None, first)
        assert [c.id for c in app.store.list_conversations()] == [app.session.conversation_id, first]


@pytest.mark.slow
async def test_real_smollm2_answers_in_the_app(localchat_home, smollm2_installed):
    svc = Services.open(localchat_home)
    svc.config.sampling = {"temperature": 0.0}  # greedy: the same answer every run
    app = make_app(svc, smollm2_installed)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot, timeout=120)
        await send(pilot, "What is the capital of France?")
        block = await reply(app, pilot, timeout=120)
        assert "paris" in block.source.lower()
        assert app.session.messages[-1].content == block.source
        assert "smollm2-135m-instruct Q4_1" in status(app)
