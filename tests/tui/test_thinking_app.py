"""The real app with a tiny reasoning model (its greedy reply is a known thought and answer): the thought shows
in a block above the answer, folded once the answer is there, opened and folded by F4 and by a click; the status
line counts thought and answer tokens apart and what the prompt reused; F5 switches thinking for the model and
saves it; a conversation opened again shows its stored thought folded. A model that does not think shows none
of it."""

from __future__ import annotations

import re

import pytest

from localchat.config import Config
from localchat.tui.app import make_app
from localchat.tui.widgets.thought import ThoughtBlock, ThoughtHeader
from tests.support.ggufgen import make_tiny_gguf
from tests.support.models import register_local_model
from tests.support.pilot import blocks, loaded, reply, send, status, wait_for
from tests.support.thinking_templates import ANSWER, LONG_THOUGHT, QWEN3_STYLE, THOUGHT

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]



@pytest.fixture(scope="module")
def thinker(tmp_path_factory):
    return make_tiny_gguf(tmp_path_factory.mktemp("thinker") / "thinker.gguf", reply=ANSWER, thought=THOUGHT,
                          chat_template=QWEN3_STYLE)


@pytest.fixture(scope="module")
def long_thinker(tmp_path_factory):
    # 48 blocks (their weights zero: the reply is the same) make it think slowly enough for a key to arrive
    # mid-thought: about 150 MB, some milliseconds a token
    return make_tiny_gguf(tmp_path_factory.mktemp("long-thinker") / "long.gguf", reply=ANSWER, thought=LONG_THOUGHT,
                          chat_template=QWEN3_STYLE, n_ctx_train=4096, n_layer=48)


def _header(block: ThoughtBlock) -> str:
    return str(block.query_one(ThoughtHeader).render())


async def test_a_thought_streams_folds_opens_and_is_counted_apart(localchat_home, thinker):
    svc = register_local_model(localchat_home, thinker, model_id="thinker", template=None)
    app = make_app(svc, "thinker")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        assert "thinker · think: default" in status(app)
        await send(pilot, "hello")
        answer = await reply(app, pilot)
        assert answer.source == ANSWER
        thoughts = list(app.chat.query(ThoughtBlock))
        assert len(thoughts) == 1
        thought = thoughts[0]
        assert thought.text == THOUGHT and thought.folded and not thought.live
        assert thought.parent is answer.parent  # above the answer, in the reply's own view
        stored = app.store.conversation(app.session.conversation_id).messages[-1]
        assert stored.reasoning == THOUGHT and stored.content == ANSWER and stored.completion_tokens
        # The engine counts the thought's tokens itself, as it decodes them: exact, no "~".
        expected = stored.reasoning_tokens
        assert expected is not None and 0 < expected < stored.completion_tokens
        await wait_for(lambda: thought.tokens == expected and not thought.approximate, pilot, 20,
                       "the thought's token count")
        assert _header(thought).startswith("▸ Thought for ") and _header(thought).endswith(f"· {expected} tokens")
        line = status(app)
        assert (f"thought {expected} · answer {stored.completion_tokens - expected} tok · " in line
                and "tok/s" in line), line
        assert f"prompt {stored.prompt_tokens}: " in line and " reused, " in line and " evaluated" in line, line

        await pilot.press("f4")  # open the last thought, then fold it again
        assert not thought.folded and _header(thought).startswith("▾ ")
        await pilot.press("f4")
        assert thought.folded
        await pilot.click(ThoughtHeader)
        assert not thought.folded
        await pilot.click(ThoughtHeader)
        assert thought.folded

        # The second turn reuses the first one's prompt: the status line says how much.
        app.chat.prompt.focus()  # the clicks focused the conversation pane
        await send(pilot, "again")
        await reply(app, pilot, 2)
        first = app.store.conversation(app.session.conversation_id).messages[-1]
        assert first.reasoning == THOUGHT
        line = status(app)
        prompt = [p for p in re.split("│|\n", line) if "prompt " in p][0].strip()  # the line may take two
        total, rest = prompt.removeprefix("prompt ").split(": ")
        reused = int(rest.split(" reused")[0].replace(",", ""))
        evaluated = int(rest.split(", ")[1].split(" ")[0].replace(",", ""))
        assert reused > 0 and reused + evaluated == int(total.replace(",", "")), prompt


async def test_f5_switches_thinking_for_the_model_and_saves_it(localchat_home, thinker):
    svc = register_local_model(localchat_home, thinker, model_id="thinker", template=None)
    app = make_app(svc, "thinker")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        await pilot.press("f5")
        assert "think: on" in status(app)
        await wait_for(lambda: Config.load_file(svc.paths.config_file).thinking_for("thinker") == "on", pilot, 10)
        await pilot.press("f5")
        assert "think: off" in status(app)
        await wait_for(lambda: Config.load_file(svc.paths.config_file).thinking_for("thinker") == "off", pilot, 10)
        await pilot.press("f5")
        assert "think: default" in status(app)
        await wait_for(lambda: "thinker" not in Config.load_file(svc.paths.config_file).models, pilot, 10)


async def test_the_settings_screen_sets_thinking_per_model_and_for_all(localchat_home, thinker):
    from textual.widgets import Select

    from localchat.tui.screens.settings import SettingsScreen

    svc = register_local_model(localchat_home, thinker, model_id="thinker", template=None)
    app = make_app(svc, "thinker")
    async with app.run_test(size=(120, 44)) as pilot:
        await loaded(app, pilot)
        await pilot.press("f3")
        screen = app.screen
        assert isinstance(screen, SettingsScreen) and screen.scope == "thinker"
        thinking = screen.query_one("#thinking", Select)
        assert thinking.value is Select.NULL and thinking.prompt == "inherit (default)"
        thinking.value = "off"
        await pilot.press("ctrl+s")
        assert app.services.config.thinking_for("thinker") == "off" and "think: off" in status(app)
        screen.query_one("#scope", Select).value = "*"
        await pilot.pause()
        assert screen.query_one("#thinking", Select).value == "default"
        screen.query_one("#thinking", Select).value = "on"
        await pilot.press("ctrl+s")
        await wait_for(lambda: Config.load_file(svc.paths.config_file).thinking == "on", pilot, 10)
        saved = Config.load_file(svc.paths.config_file)
        assert saved.thinking_for("thinker") == "off" and saved.thinking_for("other") == "on"
        screen.query_one("#scope", Select).value = "thinker"
        await pilot.pause()
        assert screen.query_one("#thinking", Select).value == "off"
        assert screen.query_one("#thinking", Select).prompt == "inherit (on)"


async def test_a_reopened_conversation_shows_its_thought_folded(localchat_home, thinker):
    svc = register_local_model(localchat_home, thinker, model_id="thinker", template=None)
    store = svc.store
    cid = store.create_conversation(model="thinker")
    store.add_message(cid, "user", "why?")
    writer = store.begin_reply(cid, model="thinker")
    writer.append_reasoning("Because of the first reason.\nAnd a second one.")
    writer.append("Two reasons.")
    writer.finish("complete", {"completion_tokens": 30, "reasoning_tokens": 21, "thinking_seconds": 4.2})
    store.add_message(cid, "user", "and?")
    store.add_message(cid, "assistant", "No thought in this one.")
    app = make_app(svc, "thinker")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        await wait_for(lambda: app.chat.sidebar.options.option_count == 1, pilot)
        app.chat.sidebar.options.focus()
        await pilot.press("enter")
        await wait_for(lambda: len(blocks(app, "assistant")) == 2, pilot)
        await pilot.pause()
        thoughts = list(app.chat.query(ThoughtBlock))
        assert len(thoughts) == 1  # only the reply that thought has a block
        thought = thoughts[0]
        assert thought.folded and thought.text == "Because of the first reason.\nAnd a second one."
        assert _header(thought) == "▸ Thought for 4 s · 21 tokens"
        await pilot.press("f4")
        assert not thought.folded


async def test_a_model_that_does_not_think_shows_no_thought(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        await send(pilot, "hello")
        await reply(app, pilot)
        assert not list(app.chat.query(ThoughtBlock))
        line = status(app)
        assert "think:" not in line and "thought " not in line and "tok/s" in line and "prompt " in line, line
        await pilot.press("f5")  # nothing to switch: the config is left alone
        assert "think:" not in status(app) and "tiny" not in app.services.config.models


async def test_ctrl_s_ends_a_streaming_thought_and_the_answer_follows(localchat_home, long_thinker):
    svc = register_local_model(localchat_home, long_thinker, model_id="long", template=None)
    app = make_app(svc, "long")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(app, pilot)
        await send(pilot, "hello")
        await wait_for(lambda: any(b.live and b.text for b in app.chat.query(ThoughtBlock)), pilot, 60, "a live thought")
        await pilot.press("ctrl+s")
        answer = await reply(app, pilot)
        assert answer.source == ANSWER
        stored = app.store.conversation(app.session.conversation_id).messages[-1]
        assert stored.content == ANSWER
        assert LONG_THOUGHT.startswith(stored.reasoning.strip()) and len(stored.reasoning) < len(LONG_THOUGHT) // 2
        thought = next(iter(app.chat.query(ThoughtBlock)))
        assert thought.text == stored.reasoning
        assert thought.folded and _header(thought).endswith("(ended early)")
