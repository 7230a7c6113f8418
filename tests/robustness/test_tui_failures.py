"""The app under Pilot when things break: the worker dies mid-reply (SIGKILL, which is also what the OOM
killer sends, and SIGSEGV) and a single message longer than the context window. Each is a notification;
the partial reply and the conversation are kept; the next message loads the model again."""

from __future__ import annotations

import os
import signal

import pytest

from localchat.tui.app import make_app
from localchat.tui.widgets.prompt import PromptInput
from localchat.tui.widgets.statusbar import StatusBar
from tests.support.models import register_local_model
from tests.support.pilot import blocks, loaded, send, views, wait_for


def notifications(app) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


@pytest.mark.asyncio
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
async def test_worker_death_mid_reply_keeps_the_partial_reply_and_reloads(localchat_home, tiny_loop_model, sig):
    svc = register_local_model(localchat_home, tiny_loop_model, model_id="chatty")
    app = make_app(svc, "chatty")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        first_pid = app.engine.pid
        for _attempt in range(5):
            await send(pilot, "talk")
            await wait_for(lambda: blocks(app, "assistant") and len(blocks(app, "assistant")[-1].source) > 20, pilot)
            # The loop model can finish its max_tokens before the kill lands: freeze the worker, and kill it
            # only if it is still mid-reply (else let it go and ask again).
            os.kill(first_pid, signal.SIGSTOP)
            await pilot.pause(0.1)
            if app.busy:
                break
            os.kill(first_pid, signal.SIGCONT)
        assert app.busy, "the reply always ended before the worker could be killed"
        os.kill(first_pid, sig)
        os.kill(first_pid, signal.SIGCONT)  # a stopped process takes SIGSEGV when it runs again
        await wait_for(lambda: not app.busy, pilot)
        assert app.is_running
        view = views(app)[-1]
        assert view.has_class("error") and view.block.source.startswith("abcdefgh ")
        assert any("Reply failed" in n and f"killed by {sig.name}" in n for n in notifications(app))
        assert "error" in app.query_one(StatusBar).render()
        # the partial reply is in the conversation and in the store, marked as an error
        assert app.session.messages[-1].role == "assistant" and app.session.messages[-1].content.startswith("abcdefgh")
        stored = app.session.store.conversation(app.session.conversation_id).messages
        assert [m.role for m in stored][-2:] == ["user", "assistant"]
        assert stored[-1].status == "error" and stored[-1].content.startswith("abcdefgh")

        # the next message loads the model again (the text waits in the input), then is answered
        n_replies = len(blocks(app, "assistant"))
        await send(pilot, "again")
        await wait_for(lambda: app.engine.alive and app.engine.pid != first_pid, pilot)
        assert any("loading it again" in n for n in notifications(app))
        assert app.query_one(PromptInput).text == "again"
        await pilot.press("enter")
        await wait_for(lambda: len(blocks(app, "assistant")) == n_replies + 1
                       and len(blocks(app, "assistant")[-1].source) > 9, pilot)
        await pilot.press("escape")
        await wait_for(lambda: not app.busy, pilot)
        assert [m.role for m in app.session.messages] == ["user", "assistant"] * (n_replies + 1)


@pytest.mark.asyncio
async def test_a_message_longer_than_the_window_is_a_notification_and_the_conversation_stays(localchat_home, tiny_model):
    svc = register_local_model(localchat_home, tiny_model, context=256)
    app = make_app(svc, "tiny")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        assert app.engine.info.n_ctx == 256
        await send(pilot, "hello")
        await wait_for(lambda: blocks(app, "assistant") and not app.busy, pilot)
        app.query_one(PromptInput).text = "word " * 400
        await pilot.press("enter")
        await wait_for(lambda: any("too long for the context window" in n for n in notifications(app)), pilot)
        await wait_for(lambda: not app.busy, pilot)
        assert app.is_running and app.engine.alive
        assert [m.content for m in app.session.messages] == ["hello", "Hi 你好🙂!"]
        # the refused message goes back to the input, to shorten; the conversation goes on
        assert app.query_one(PromptInput).text.startswith("word word")
        app.query_one(PromptInput).text = ""
        await send(pilot, "short")
        await wait_for(lambda: len(blocks(app, "assistant")) == 2 and not app.busy, pilot)
        assert [m.content for m in app.session.messages][-2:] == ["short", "Hi 你好🙂!"]
