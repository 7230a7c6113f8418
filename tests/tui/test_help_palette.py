"""Help lists every key binding; every action is in the command palette; the theme is remembered."""

import pytest

from localchat.config import Config
from localchat.tui.app import LocalchatApp, make_app
from localchat.tui.commands import ACTIONS, binding_rows
from localchat.tui.screens.chat import ChatScreen
from localchat.tui.screens.help import HelpScreen
from localchat.tui.screens.models import ModelsScreen
from localchat.tui.screens.settings import SettingsScreen
from localchat.tui.widgets.sidebar import ConversationOptions
from tests.support.models import register_local_model
from tests.support.pilot import loaded, reply, send, type_text, views, wait_for

pytestmark = pytest.mark.asyncio


async def test_help_lists_every_binding(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("DataTable")
        shown = {tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)}
        for cls in (LocalchatApp, ChatScreen, ConversationOptions, ModelsScreen, SettingsScreen):
            for binding in cls.BINDINGS:
                assert any(binding.description == what and binding.key.replace(",", ", ") == keys
                           for _, keys, what in shown), binding
        assert any(keys == "ctrl+p" for _, keys, _ in shown)
        assert len(shown) == len(binding_rows())
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_action_is_a_palette_command(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for title, _, where, action in ACTIONS:
            assert title in titles
            assert hasattr(app if where == "app" else app.chat, f"action_{action}")
        bound = {b.action for cls in (LocalchatApp, ChatScreen) for b in cls.BINDINGS}
        assert bound - {"quit"} <= {a for *_, a in ACTIONS}  # nothing reachable only by a key
        # Run one through the palette: "New chat" after a turn empties the conversation.
        await send(pilot, "hello")
        await reply(app, pilot)
        await pilot.press("ctrl+p")
        await type_text(pilot, "New chat")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(lambda: not views(app), pilot)


async def test_the_chosen_theme_is_saved_and_used_next_time(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        app.theme = "nord"
        await wait_for(lambda: Config.load_file(localchat_home / "config" / "config.yaml").theme == "nord", pilot)
    again = make_app(register_local_model(localchat_home, tiny_model, model_id="tiny2"), "tiny")
    async with again.run_test(size=(120, 40)) as pilot:
        assert again.theme == "nord"


async def test_model_actions_are_palette_commands_too(localchat_home, tiny_model, tmp_path):
    copy = tmp_path / "spare.gguf"
    copy.write_bytes(tiny_model.read_bytes())
    register_local_model(localchat_home, tiny_model, model_id="tiny")
    svc = register_local_model(localchat_home, copy, model_id="spare")
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Switch to spare", "Delete spare", "Verify spare", "Verify tiny",
                "Pull qwen2.5-0.5b-instruct"} <= titles
        assert "Delete tiny" not in titles and "Switch to tiny" not in titles  # the model in use
        await pilot.press("ctrl+p")
        await type_text(pilot, "Delete spare")
        await pilot.pause(0.5)
        await pilot.press("enter")
        from localchat.tui.screens.dialogs import ConfirmDialog
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await pilot.press("enter")
        await wait_for(lambda: not copy.exists(), pilot)
