"""SVG snapshots of the main screens (pytest-textual-snapshot). Deterministic: fixed terminal size, no clock,
timings and build-specific hardware facts masked, notifications cleared before the shot.

Update after an intended change: scripts/test tests/tui/test_snapshots.py --snapshot-update
"""


from localchat.services import Services
from localchat.tui.app import make_app
from localchat.tui.screens.models import ModelsScreen
from tests.support.models import register_local_model
from tests.support.pilot import loaded, reply, send, wait_for

SIZE = (120, 36)


def seeded_app(home, tiny_model):
    svc = register_local_model(home, tiny_model)
    store = svc.store
    old = store.create_conversation(model="tiny")
    store.add_message(old, "user", "Plan a trip to Kyoto in spring")
    store.add_message(old, "assistant", "Go in early April for the cherry blossoms.")
    return make_app(svc, "tiny")


async def steady(pilot) -> None:
    """Mask what changes from run to run (speed, the build's offload), drop toasts, let the screen settle."""
    app = pilot.app
    await app.workers.wait_for_complete()  # store and model work the screen is waiting on
    for field in [*app.screen.query("TextArea, Input"), *app.chat.query("TextArea, Input")]:
        field.cursor_blink = False  # a blinking cursor is on or off depending on when the shot is taken
    await pilot.pause(0.1)
    app.chat.status.speed = "12.3 tok/s, TTFT 45 ms" if app.chat.status.speed else ""
    app.chat.status.hardware = "CPU, flash attn off"
    app.clear_notifications()
    await pilot.pause(0.3)
    app.clear_notifications()
    await pilot.wait_for_scheduled_animations()


def test_chat_screen(snap_compare, localchat_home, tiny_model):
    app = seeded_app(localchat_home, tiny_model)

    async def run_before(pilot):
        await loaded(app, pilot)
        await send(pilot, "Say hello in **two** languages")
        await reply(app, pilot)
        await wait_for(lambda: app.chat.sidebar.options.option_count == 2, pilot)
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_open_conversation_with_code(snap_compare, localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    cid = svc.store.create_conversation(model="tiny")
    svc.store.add_message(cid, "user", "Reverse a list in Python")
    svc.store.add_message(cid, "assistant", "Slice it:\n\n```python\nitems = [1, 2, 3]\nprint(items[::-1])\n```\n\n"
                          "| way | copies |\n|---|---|\n| `items[::-1]` | yes |\n| `items.reverse()` | no |\n",
                          model="tiny")
    app = make_app(svc, "tiny")

    async def run_before(pilot):
        await loaded(app, pilot)
        await wait_for(lambda: app.chat.sidebar.options.option_count == 1, pilot)
        app.chat.sidebar.options.focus()
        await pilot.press("enter")
        await wait_for(lambda: app.session.conversation_id == cid and app.chat.log_view.views(), pilot)
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_model_picker(snap_compare, localchat_home, tiny_model):
    register_local_model(localchat_home, tiny_model, model_id="tiny")
    svc = register_local_model(localchat_home, tiny_model, model_id="tiny-copy")
    app = make_app(svc, "tiny")

    async def run_before(pilot):
        await loaded(app, pilot)
        await steady(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause(0.2)
        app.screen.query_one("Input").cursor_blink = False
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_models_screen(snap_compare, localchat_home, tiny_model):
    app = make_app(register_local_model(localchat_home, tiny_model), "tiny")

    async def run_before(pilot):
        await loaded(app, pilot)
        await pilot.press("f2")
        await wait_for(lambda: isinstance(app.screen, ModelsScreen) and app.screen.rows, pilot)
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_settings_screen(snap_compare, localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    svc.config.sampling = {"temperature": 0.3}
    svc.config.models = {"tiny": {"sampling": {"top_k": 20}, "system_prompt": "You are terse."}}
    app = make_app(svc, "tiny")

    async def run_before(pilot):
        await loaded(app, pilot)
        await pilot.press("f3")
        await steady(pilot)

    assert snap_compare(app, terminal_size=(120, 44), run_before=run_before)


def test_welcome_screen(snap_compare, localchat_home):
    app = make_app(Services.open(localchat_home))

    async def run_before(pilot):
        await pilot.pause(0.2)
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare, localchat_home, tiny_model):
    app = make_app(register_local_model(localchat_home, tiny_model), "tiny")

    async def run_before(pilot):
        await loaded(app, pilot)
        await pilot.press("f1")
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
