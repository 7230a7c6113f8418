"""Remote engines: a catalog entry with `endpoint` chats through RemoteEngineClient exactly like a local
model (ChatSession, `localchat run`, the store). The remote here is a `localchat serve` started by the test."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from localchat.chat import ChatSession
from localchat.engine.api import TextDelta
from localchat.engine.remote import RemoteEngineClient, RemoteTemplate
from localchat.errors import ConfigError, EngineError, OfflineError
from localchat.services import Services
from localchat.types import Message, SamplingParams
from tests.support.models import register_local_model
from tests.support.server import add_remote, long_context

REPLY = "Hi 你好🙂!"
KEY = "remote-key-1234"


@pytest.fixture
def remote(localchat_home, tiny_model, serve, monkeypatch):
    """A `localchat serve` with the tiny model behind a key, and a catalog entry 'cluster' pointing at it."""
    register_local_model(localchat_home, tiny_model, "tiny")
    server = serve("--model", "tiny", "--api-key", KEY, key=KEY)
    monkeypatch.setenv("CLUSTER_KEY", KEY)
    add_remote(localchat_home, "cluster", server.v1, remote_model="tiny", key_env="CLUSTER_KEY")
    return server


def test_chat_session_with_a_remote_engine_is_stored_like_a_local_one(localchat_home, remote):
    svc = Services.open(localchat_home)
    engine = svc.start_engine("cluster")
    assert isinstance(engine, RemoteEngineClient) and engine.alive
    assert engine.info.n_ctx > 0 and engine.info.architecture == "remote"
    template, warnings = svc.chat_template(svc.entry("cluster"), engine.info.chat_template)
    assert isinstance(template, RemoteTemplate) and warnings == []
    session = ChatSession(engine, template, model_id="cluster", system="Be brief.", store=svc.store)
    events = list(session.send("hello"))
    assert all(isinstance(e, TextDelta) for e in events) and "".join(e.text for e in events) == REPLY
    turn = session.send("and again")
    assert turn.run() == REPLY and turn.status == "complete"
    assert turn.usage.completion_tokens > 0 and turn.usage.prompt_tokens > 0 and turn.usage.ttft > 0
    assert [m.role for m in session.messages] == ["user", "assistant", "user", "assistant"]
    conv = svc.store.conversation(session.conversation_id)
    assert conv.model == "cluster" and conv.system == "Be brief."
    assert [(m.role, m.content, m.status) for m in conv.messages] == [
        ("user", "hello", "complete"), ("assistant", REPLY, "complete"),
        ("user", "and again", "complete"), ("assistant", REPLY, "complete")]
    assert conv.messages[-1].model == "cluster" and conv.messages[-1].completion_tokens > 0
    engine.close()
    assert not engine.alive


def test_the_context_window_comes_from_the_server_and_the_catalog(localchat_home, remote):
    svc = Services.open(localchat_home)
    assert svc.start_engine("cluster").info.n_ctx == remote_ctx(remote)
    add_remote(localchat_home, "small", remote.v1, remote_model="tiny", key_env="CLUSTER_KEY", context=512)
    assert Services.open(localchat_home).start_engine("small").info.n_ctx == 512


def remote_ctx(server) -> int:
    import requests

    models = requests.get(server.v1 + "/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()
    return models["data"][0]["max_model_len"]


def test_localchat_run_with_a_remote_entry(localchat_home, remote):
    done = subprocess.run([sys.executable, "-m", "localchat", "run", "cluster", "hello", "--stats"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == REPLY + "\n"
    assert "tokens/s" in done.stderr and "pulling" not in done.stderr
    svc = Services.open(localchat_home)
    conv = svc.store.conversation(svc.store.latest_conversation_id())
    assert [(m.role, m.content) for m in conv.messages] == [("user", "hello"), ("assistant", REPLY)]
    assert conv.model == "cluster"
    # --continue sends the stored history to the remote engine.
    done = subprocess.run([sys.executable, "-m", "localchat", "run", "cluster", "more", "--continue"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(Services.open(localchat_home).store.conversation(conv.id).messages) == 4


def test_cancelling_a_remote_reply_stops_the_server_side_generation(localchat_home, slow_loop_model, serve,
                                                                    monkeypatch):
    register_local_model(localchat_home, slow_loop_model, "chatty")
    long_context(localchat_home, "chatty")
    server = serve("--model", "chatty")
    svc = add_remote(localchat_home, "far-chatty", server.v1, remote_model="chatty")
    engine = svc.start_engine("far-chatty")
    session = ChatSession(engine, svc.chat_template(svc.entry("far-chatty"), None)[0], model_id="far-chatty",
                          sampling=SamplingParams(max_tokens=30000), store=svc.store)
    turn = session.send("talk")
    for _event in turn:
        if len(turn.text) > 20:
            turn.cancel()
    assert turn.status == "cancelled" and turn.text.startswith("abcdefgh")
    health = server.wait_health(lambda h: h["generations"]["cancelled"] == 1)
    assert health["generations"]["completed"] == 0
    conv = svc.store.conversation(session.conversation_id)
    assert conv.messages[-1].status == "cancelled" and conv.messages[-1].content == turn.text


def test_a_string_prompt_goes_to_the_completions_endpoint(localchat_home, remote):
    engine = Services.open(localchat_home).start_engine("cluster")
    generation = engine.generate("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", SamplingParams())
    events = list(generation)
    assert all(isinstance(e, TextDelta) for e in events)
    assert "".join(e.text for e in events) == REPLY == generation.text and generation.finish_reason == "stop"
    assert generation.usage.completion_tokens > 0
    generation = engine.generate([Message("user", "hi")], SamplingParams(max_tokens=2))
    list(generation)
    assert generation.text == "Hi" and generation.finish_reason == "length"


def test_token_counts_are_estimated_and_corrected_by_the_server(localchat_home, remote):
    engine = Services.open(localchat_home).start_engine("cluster")
    text = "hello world, this is a sentence of ordinary English text. " * 10
    first = engine.count_tokens([text])[0]
    assert first >= len(text) / 4  # starts on the safe side
    messages = [Message("user", text)]
    assert engine.count_tokens([messages])[0] > first  # role markers cost tokens too
    generation = engine.generate(messages, SamplingParams(max_tokens=1))
    list(generation)
    real = generation.usage.prompt_tokens
    assert abs(engine.count_tokens([messages])[0] - real) <= abs(first + 5 - real)


def test_wrong_or_missing_key(localchat_home, remote, monkeypatch):
    monkeypatch.setenv("CLUSTER_KEY", "not-the-key")
    with pytest.raises(EngineError, match="401") as err:
        Services.open(localchat_home).start_engine("cluster")
    assert "CLUSTER_KEY" in str(err.value)
    monkeypatch.delenv("CLUSTER_KEY")
    with pytest.raises(ConfigError, match=r"\$CLUSTER_KEY"):
        Services.open(localchat_home).start_engine("cluster")
    done = subprocess.run([sys.executable, "-m", "localchat", "run", "cluster", "hi"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "CLUSTER_KEY" in done.stderr and "Traceback" not in done.stderr


def test_a_model_the_server_does_not_serve(localchat_home, remote):
    svc = add_remote(localchat_home, "wrong", remote.v1, remote_model="gpt-4", key_env="CLUSTER_KEY")
    with pytest.raises(EngineError, match="does not serve 'gpt-4'") as err:
        svc.start_engine("wrong")
    assert "tiny" in str(err.value)


def test_an_unreachable_endpoint_is_a_clear_error(localchat_home):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    svc = add_remote(localchat_home, "gone", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(EngineError, match="cannot reach the remote engine"):
        svc.start_engine("gone")


def test_offline_mode_refuses_remote_engines_beyond_this_machine(localchat_home):
    add_remote(localchat_home, "far", "https://gpu-cluster.example.invalid/v1")
    with pytest.raises(OfflineError, match="offline"):
        Services.open(localchat_home, offline=True).start_engine("far")
