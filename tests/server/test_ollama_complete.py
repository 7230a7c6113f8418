"""The rest of Ollama's API with the official `ollama` client: `options` mapped or refused, `format` served
through the grammar, keep_alive expiry, /api/show capabilities; the real SmolLM2 follows a schema."""

from __future__ import annotations

import json

import ollama
import pytest
import requests

from localchat.server.ollama import OllamaApi
from tests.support.models import register_local_model
from tests.support.server import serve_tiny, start_server

ANSWER = {"type": "object", "additionalProperties": False, "required": ["answer", "city"],
          "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                         "city": {"type": "string", "maxLength": 20}}}
CHAT = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    yield from serve_tiny(tmp_path_factory, tiny_model, context=512)


@pytest.fixture
def client(server):
    return ollama.Client(host=server.url)


def test_sampling_options_are_mapped(client):
    cut = client.chat(model="tiny", messages=CHAT, options={"stop": ["你"], "temperature": 0.2, "top_k": 5,
                                                             "top_p": 0.9, "seed": 7, "repeat_penalty": 1.0,
                                                             "min_p": 0.0, "num_ctx": 256})
    assert cut.message.content == "Hi " and cut.done_reason == "stop"
    short = client.generate(model="tiny", prompt="x", options={"num_predict": 2, "num_gpu": 0, "num_thread": 1,
                                                               "mirostat": 0, "typical_p": 1.0, "mirostat_eta": 0.1,
                                                               "mirostat_tau": 5.0, "penalize_newline": True})
    assert short.response == "Hi" and short.done_reason == "length"  # load-time options ignored, no-ops accepted


@pytest.mark.parametrize("options,words", [
    ({"mirostat": 2}, "option 'mirostat' is not supported"),
    ({"tfs_z": 0.5}, "option 'tfs_z' is not supported"),
    ({"temprature": 0.5}, "unknown option 'temprature'"),
    ({"num_ctx": 100000}, "num_ctx 100000 is larger than the 512-token window"),
    ({"num_ctx": "big"}, "'num_ctx' must be a positive whole number"),
])
def test_options_we_cannot_honour_are_refused(server, options, words):
    resp = requests.post(server.url + "/api/chat", json={"model": "tiny", "messages": CHAT, "options": options},
                         timeout=30)
    assert resp.status_code == 400 and words in resp.json()["error"], resp.text


def test_format_constrains_the_reply(client):
    """The tiny model always says "Hi 你好🙂!"; with a format it can only say JSON."""
    as_json = client.chat(model="tiny", messages=CHAT, format="json", options={"num_predict": 40, "temperature": 0})
    assert json.loads(as_json.message.content) == {}
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}},
              "additionalProperties": False}
    parts = list(client.generate(model="tiny", prompt="x", format=schema, stream=True,
                                 options={"num_predict": 40, "temperature": 0}))
    value = json.loads("".join(p.response for p in parts))
    assert set(value) == {"n"} and isinstance(value["n"], int)


def test_a_format_that_cannot_be_a_grammar_is_refused(server):
    resp = requests.post(server.url + "/api/chat", timeout=30, json={
        "model": "tiny", "messages": CHAT, "format": {"type": "object", "properties": {"a": {"type": "int"}}}})
    assert resp.status_code == 400 and "format.properties.a.type" in resp.json()["error"]


def test_keep_alive_duration_expires_and_ps_shows_when(client, server):
    client.chat(model="tiny", messages=CHAT, keep_alive="1h")
    (running,) = client.ps().models
    assert running.expires_at is not None and running.expires_at.year >= 2026
    client.chat(model="tiny", messages=CHAT, keep_alive="1s")
    server.wait_health(lambda h: h["models"] == [], timeout=30)
    assert client.ps().models == []
    assert client.chat(model="tiny", messages=CHAT).message.content  # loads again on demand


def test_model_management_says_to_use_the_command_line(client, server):
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("tiny")
    assert info.value.status_code == 501 and "localchat pull ID" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("tiny")
    assert info.value.status_code == 501 and "localchat rm ID" in info.value.error
    assert requests.post(server.url + "/api/copy", json={}, timeout=10).status_code == 501


def test_capabilities_come_from_template_and_metadata():
    chatml = "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}"
    tools = chatml + "{% if tools %}<tools>{{ tools }}</tools>{% endif %}"
    thinking = tools + "{{ '<think>' }}{{ reasoning_content }}{{ '</think>' }}"
    meta = {"general.architecture": "qwen3"}
    assert OllamaApi._capabilities({**meta, "tokenizer.chat_template": chatml}) == ["completion"]
    assert OllamaApi._capabilities({**meta, "tokenizer.chat_template": tools}) == ["completion", "tools"]
    assert OllamaApi._capabilities({**meta, "tokenizer.chat_template": thinking}) == ["completion", "tools", "thinking"]
    assert OllamaApi._capabilities({**meta, "qwen3.pooling_type": 3, "tokenizer.chat_template": tools}) == ["embedding"]
    assert OllamaApi._capabilities({}) == ["completion"]


def test_smollm2_follows_a_schema_through_ollamas_format(tmp_path_factory, smollm2_path):
    home = tmp_path_factory.mktemp("serve") / "home"
    register_local_model(home, smollm2_path, "smol")
    server = start_server(home, "--model", "smol")
    try:
        reply = ollama.Client(host=server.url).chat(
            model="smol", messages=[{"role": "user", "content": "Is Paris in France? Answer in JSON."}],
            format=ANSWER, options={"temperature": 0, "num_predict": 100})
    finally:
        server.stop()
    value = json.loads(reply.message.content)
    assert value["answer"] in ("yes", "no") and isinstance(value["city"], str) and set(value) == {"answer", "city"}
    assert reply.done_reason == "stop"


def test_ollama_port_settings_are_checked():
    from localchat.errors import ConfigError
    from localchat.server.settings import ServerSettings

    assert ServerSettings(port=8000, ollama_port=11434).validate().ollama_port == 11434
    assert ServerSettings(port=0, ollama_port=0).validate()  # both picked free
    with pytest.raises(ConfigError, match="same as --port"):
        ServerSettings(port=11434, ollama_port=11434).validate()
    with pytest.raises(ConfigError, match="out of range"):
        ServerSettings(ollama_port=70000).validate()


def test_a_taken_ollama_port_is_a_clear_error(localchat_home):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "localchat", "serve", "--port", "0", "--ollama-port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "--ollama-port" in done.stderr and "Traceback" not in done.stderr
