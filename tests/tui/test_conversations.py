"""The conversation list: saved conversations, open, new, rename, delete, search (through the real store)."""

import pytest

from localchat.tui.app import make_app
from localchat.tui.screens.dialogs import ConfirmDialog, TextDialog
from tests.support.models import register_local_model
from tests.support.pilot import blocks, loaded, reply, send, type_text, views, wait_for

pytestmark = pytest.mark.asyncio


def seed(svc):
    store = svc.store
    trip = store.create_conversation(model="tiny")
    store.add_message(trip, "user", "Plan a trip to Kyoto in spring")
    store.add_message(trip, "assistant", "Go in early April for the cherry blossoms.")
    code = store.create_conversation(model="tiny", system="You are terse.")
    store.add_message(code, "user", "How do I reverse a list in Python?")
    store.add_message(code, "assistant", "Use `items[::-1]` or `items.reverse()`.")
    return trip, code


def listed(app):
    ol = app.chat.sidebar.options
    return [ol.get_option_at_index(i).id for i in range(ol.option_count)]


async def test_open_a_saved_conversation_and_continue_it(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    trip, code = seed(svc)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 34)) as pilot:
        await loaded(app, pilot)
        await wait_for(lambda: listed(app) == [str(code), str(trip)], pilot)  # newest first
        app.chat.sidebar.options.focus()
        await pilot.press("down", "enter")
        await wait_for(lambda: app.session.conversation_id == trip and len(views(app)) == 2, pilot)
        assert blocks(app, "assistant")[0].source == "Go in early April for the cherry blossoms."
        assert app.chat.prompt.has_focus
        await send(pilot, "and in autumn?")
        await reply(app, pilot, 2)
        messages = app.store.conversation(trip).messages
        assert [m.content for m in messages][-2:] == ["and in autumn?", "Hi 你好🙂!"]
        assert app.session.messages[0].content == "Plan a trip to Kyoto in spring"
        await wait_for(lambda: listed(app)[0] == str(trip), pilot)  # the latest activity comes first

        # An opened conversation keeps the system prompt it was started with.
        app.chat.sidebar.options.focus()
        await pilot.press("down", "enter")
        await wait_for(lambda: app.session.conversation_id == code, pilot)
        assert app.session.system == "You are terse."

        await pilot.press("ctrl+n")
        assert app.session.conversation_id is None and not views(app)
        assert app.session.system is None


async def test_rename_and_delete(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    trip, code = seed(svc)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 34)) as pilot:
        await loaded(app, pilot)
        await wait_for(lambda: listed(app) == [str(code), str(trip)], pilot)
        app.chat.sidebar.options.focus()
        await pilot.press("r")
        assert isinstance(app.screen, TextDialog)
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "Python lists")
        await pilot.press("enter")
        await wait_for(lambda: app.store.conversation(code).title == "Python lists", pilot)
        await wait_for(lambda: "Python lists" in str(app.chat.sidebar.options.get_option_at_index(0).prompt), pilot)

        await pilot.press("delete")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")  # declined: nothing happens
        await pilot.pause(0.2)
        assert listed(app) == [str(code), str(trip)]
        await pilot.press("delete", "enter")
        await wait_for(lambda: listed(app) == [str(trip)], pilot)
        assert [c.id for c in app.store.list_conversations()] == [trip]


async def test_deleting_the_open_conversation_starts_a_new_one(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 34)) as pilot:
        await loaded(app, pilot)
        await send(pilot, "hello")
        await reply(app, pilot)
        current = app.session.conversation_id
        await wait_for(lambda: listed(app) == [str(current)], pilot)
        app.chat.sidebar.options.focus()
        await pilot.press("d", "enter")
        await wait_for(lambda: app.session.conversation_id is None and not views(app), pilot)
        assert app.store.list_conversations() == []


async def test_search_finds_words_across_conversations(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    trip, code = seed(svc)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 34)) as pilot:
        await loaded(app, pilot)
        await wait_for(lambda: len(listed(app)) == 2, pilot)
        await pilot.press("ctrl+f")
        await type_text(pilot, "cherry")
        await wait_for(lambda: listed(app) == [str(trip)], pilot)
        assert "cherry" in str(app.chat.sidebar.options.get_option_at_index(0).prompt)
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "nothing-like-this")
        await wait_for(lambda: listed(app) == [None], pilot)  # one disabled line saying nothing matches
        await pilot.press("ctrl+a", "ctrl+k")
        await wait_for(lambda: len(listed(app)) == 2, pilot)  # cleared: the whole list again
        await type_text(pilot, "reverse")
        await pilot.press("enter")  # Enter searches at once and moves to the results
        await wait_for(lambda: listed(app) == [str(code)], pilot)
        await pilot.press("enter")
        await wait_for(lambda: app.session.conversation_id == code, pilot)
