"""Loopback by default; an API key (Bearer, constant-time compare) required to listen anywhere else."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest
import requests

from localchat.errors import ConfigError
from localchat.server.settings import ServerSettings
from tests.support.models import register_local_model

KEY = "s3cret-key-for-tests"


def test_listening_off_loopback_without_a_key_is_refused(localchat_home, tiny_model):
    register_local_model(localchat_home, tiny_model, "tiny")
    done = subprocess.run([sys.executable, "-m", "localchat", "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "needs an API key" in done.stderr and "--api-key" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("host, key, ok", [
    ("127.0.0.1", None, True), ("localhost", None, True), ("::1", None, True),
    ("0.0.0.0", None, False), ("192.168.1.10", None, False), ("::", None, False), ("my-host", None, False),
    ("0.0.0.0", KEY, True),
])
def test_settings_require_a_key_off_loopback(host, key, ok):
    settings = ServerSettings(host=host, api_key=key)
    if ok:
        settings.validate()
    else:
        with pytest.raises(ConfigError, match="API key"):
            settings.validate()


def test_bearer_key_is_required_on_every_route(localchat_home, tiny_model, serve):
    register_local_model(localchat_home, tiny_model, "tiny")
    server = serve("--model", "tiny", "--api-key", KEY)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}]}
    for headers in ({}, {"Authorization": "Bearer wrong-key-xxxx"}, {"Authorization": f"Basic {KEY}"},
                    {"Authorization": f"Bearer {KEY}x"}):
        r = requests.post(server.v1 + "/chat/completions", json=body, headers=headers, timeout=60)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        assert requests.get(server.v1 + "/models", headers=headers, timeout=60).status_code == 401
        assert requests.get(server.url + "/health", headers=headers, timeout=60).status_code == 401
        assert requests.post(server.url + "/", json={"prompt": "x"}, headers=headers, timeout=60).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.v1, api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0)
    assert good.chat.completions.create(**body).choices[0].message.content == "Hi 你好🙂!"


def test_key_from_the_environment(localchat_home, tiny_model, serve):
    register_local_model(localchat_home, tiny_model, "tiny")
    server = serve(env={"LOCALCHAT_API_KEY": KEY})
    assert requests.get(server.v1 + "/models", timeout=60).status_code == 401
    assert requests.get(server.v1 + "/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).status_code == 200


def test_serve_names_a_model_that_is_not_installed(localchat_home):
    done = subprocess.run([sys.executable, "-m", "localchat", "serve", "--model", "qwen2.5-0.5b-instruct", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "localchat pull qwen2.5-0.5b-instruct" in done.stderr
