"""Settings: per model with global defaults, saved to config.yaml, applied next turn; load options reload."""

import pytest
import yaml

from localchat.config import Config
from localchat.tui.app import make_app
from localchat.tui.screens.settings import SettingsScreen
from tests.support.models import register_local_model
from tests.support.pilot import loaded, record_notifications, reply, send, type_text, wait_for

pytestmark = pytest.mark.asyncio


async def fill(pilot, app, field_id, text):
    field = app.screen.query_one(f"#{field_id}")
    field.focus()
    await pilot.press("ctrl+a", "ctrl+k") if hasattr(field, "document") else None
    field.value = ""
    await type_text(pilot, text)


async def test_global_and_per_model_sampling_are_saved_and_used(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 44)) as pilot:
        await loaded(app, pilot)
        await pilot.press("f3")
        assert isinstance(app.screen, SettingsScreen)
        screen = app.screen
        assert screen.scope == "tiny"  # opens on the model in use
        assert screen.query_one("#temperature").placeholder == "0.7"  # inherited from the built-in default

        screen.query_one("#scope").value = "*"
        await pilot.pause()
        await fill(pilot, app, "temperature", "0.2")
        await fill(pilot, app, "max_tokens", "300")
        screen.query_one("#system").text = "Answer in French."
        await pilot.press("ctrl+s")
        await wait_for(lambda: (localchat_home / "config" / "config.yaml").exists(), pilot)

        screen.query_one("#scope").value = "tiny"
        await pilot.pause()
        assert screen.query_one("#temperature").placeholder == "0.2"  # the model inherits the new default
        await fill(pilot, app, "top_k", "5")
        await pilot.press("ctrl+s")
        await pilot.press("escape")
        assert not isinstance(app.screen, SettingsScreen)

        assert app.session.sampling.temperature == 0.2 and app.session.sampling.max_tokens == 300
        assert app.session.sampling.top_k == 5 and app.session.system == "Answer in French."
        await wait_for(lambda: Config.load_file(localchat_home / "config" / "config.yaml").models, pilot)
        saved = yaml.safe_load((localchat_home / "config" / "config.yaml").read_text())
        assert saved["sampling"] == {"temperature": 0.2, "max_tokens": 300}
        assert saved["system_prompt"] == "Answer in French."
        assert saved["models"] == {"tiny": {"sampling": {"top_k": 5}}}
        await send(pilot, "hi")  # the next turn runs with them
        await reply(app, pilot)
        assert app.session.messages[-1].content == "Hi 你好🙂!"


async def test_a_changed_context_size_reloads_the_model_and_says_so(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    seen = record_notifications(app)
    async with app.run_test(size=(120, 44)) as pilot:
        await loaded(app, pilot)
        first = app.engine
        assert first.info.n_ctx == 2048
        await send(pilot, "hello")
        await reply(app, pilot)
        await pilot.press("f3")
        await fill(pilot, app, "n_ctx", "512")
        await pilot.press("ctrl+s")
        await wait_for(lambda: app.engine is not first and app.engine is not None and app.loading is None, pilot)
        assert app.engine.info.n_ctx == 512
        assert any("reloading tiny with the new context size" in s for s in seen)
        assert len(app.session.messages) == 2  # the conversation is kept
        await pilot.press("escape")
        await send(pilot, "again")
        await reply(app, pilot, 2)
        assert "/512" in str(app.chat.status.render())


async def test_bad_values_are_refused_with_a_message(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    seen = record_notifications(app)
    async with app.run_test(size=(120, 44)) as pilot:
        await loaded(app, pilot)
        await pilot.press("f3")
        await fill(pilot, app, "top_p", "1.5")
        await pilot.press("ctrl+s")
        assert any("top_p must be in (0, 1]" in s for s in seen)
        await fill(pilot, app, "top_p", "abc")
        await pilot.press("ctrl+s")
        assert any("Top p must be a number" in s for s in seen)
        await fill(pilot, app, "top_p", "")
        await fill(pilot, app, "n_gpu_layers", "lots")
        await pilot.press("ctrl+s")
        assert any("GPU layers must be auto or a whole number" in s for s in seen)
        assert not (localchat_home / "config" / "config.yaml").exists()
        assert app.session.sampling.top_p == 0.95
