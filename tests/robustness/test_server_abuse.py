"""`localchat serve` (on 127.0.0.1) against hostile and careless clients: malformed and huge bodies, absurd
parameters, no key, slow clients that hold connections open, and 200 requests from 16 concurrent clients
of which some hang up mid-reply. Each gets the right status code; everyone else is answered."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.models import register_local_model
from tests.support.server import start_server

KEY = "robust-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
REPLY = "Hi 你好🙂!"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    home = tmp_path_factory.mktemp("serve") / "home"
    register_local_model(home, tiny_model, "tiny", context=512)
    server = start_server(home, "--model", "tiny", "--api-key", KEY)
    server.key = KEY
    yield server
    assert server.stop() == 0


def chat(**extra) -> bytes:
    return json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **extra}).encode()


CASES = [
    # (what, body, headers, status, words in the error message)
    ("no key", chat(), {}, 401, ""),
    ("wrong key", chat(), {"Authorization": "Bearer nope-nope-nope"}, 401, ""),
    ("key in the wrong scheme", chat(), {"Authorization": f"Basic {KEY}"}, 401, ""),
    ("malformed JSON", b"{\"model\": \"tiny\", \"messages\": [", AUTH, 400, "JSON"),
    ("not UTF-8", b"\xff\xfe{\x00}", AUTH, 400, ""),
    ("empty body", b"", AUTH, 400, ""),
    ("deeply nested JSON", b"[" * 100_000 + b"]" * 100_000, AUTH, 400, ""),
    ("NaN temperature", chat(temperature=float("nan")), AUTH, 400, "temperature"),
    ("infinite temperature", chat(temperature=float("inf")), AUTH, 400, "temperature"),
    ("infinite repeat_penalty", chat(repeat_penalty=float("inf")), AUTH, 400, "repeat_penalty"),
    ("temperature -1", chat(temperature=-1), AUTH, 400, "temperature"),
    ("top_p -5", chat(top_p=-5), AUTH, 400, "top_p"),
    ("max_tokens negative", chat(max_tokens=-1), AUTH, 400, "max_tokens"),
    ("max_tokens as text", chat(max_tokens="lots"), AUTH, 400, "max_tokens"),
    ("messages not a list", json.dumps({"model": "tiny", "messages": "hi"}).encode(), AUTH, 400, "messages"),
    ("content a number", json.dumps({"model": "tiny", "messages": [{"role": "user", "content": 7}]}).encode(),
     AUTH, 400, ""),
    ("prompt over the window", chat(messages=[{"role": "user", "content": "ab " * 2000}]), AUTH, 400, ""),
]


@pytest.mark.parametrize("what, body, headers, status, words", CASES, ids=[c[0] for c in CASES])
def test_abuse_gets_the_right_status_code(server, what, body, headers, status, words):
    r = requests.post(server.v1 + "/chat/completions", data=body,
                      headers={"Content-Type": "application/json", **headers}, timeout=120)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"], error


@pytest.mark.parametrize("max_tokens", [10**9, 10**30])
def test_absurd_max_tokens_is_bounded_by_the_window_and_answered(server, max_tokens):
    r = requests.post(server.v1 + "/chat/completions", data=chat(max_tokens=max_tokens), headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == REPLY


def test_huge_body_is_413(server):
    r = requests.post(server.v1 + "/chat/completions", data=b"{\"x\": \"" + b"a" * (80 << 20) + b"\"}",
                      headers={"Content-Type": "application/json", **AUTH}, timeout=120)
    assert r.status_code == 413


def _address(server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname == "127.0.0.1"
    return parts.hostname, parts.port


def test_slow_clients_do_not_hold_up_the_others(server):
    host, port = _address(server)
    stalled = []
    try:
        for i in range(16):  # half a request line / headers / a body that never comes, then silence
            sock = socket.create_connection((host, port), timeout=30)
            head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                    b"\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"model\":")
            sock.sendall(head[: [10, 60, len(head)][i % 3]])
            stalled.append(sock)
        for _ in range(3):
            r = requests.post(server.v1 + "/chat/completions", data=chat(), headers=AUTH, timeout=120)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == REPLY
    finally:
        for sock in stalled:
            sock.close()
    assert server.health()["status"] == "ok"


def _hang_up_mid_stream(host: str, port: int, i: int) -> str:
    body = chat(stream=True, messages=[{"role": "user", "content": f"client {i}"}])
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\n\r\n" + body)
        sock.recv(64)  # the reply has begun (or, for a queued request, the headers have come)
    return "hung up"


def test_200_requests_from_16_clients_with_some_hanging_up(server):
    host, port = _address(server)
    sessions: dict[int, requests.Session] = {}
    before = server.health()["generations"]  # the server is shared with the tests above (a 400 counts as failed)

    def one(i: int) -> str:
        if i % 20 == 7:
            return _hang_up_mid_stream(host, port, i)
        import threading

        s = sessions.setdefault(threading.get_ident(), requests.Session())
        if i % 2:
            with s.post(server.v1 + "/chat/completions", headers=AUTH, timeout=300, stream=True,
                        data=chat(stream=True, messages=[{"role": "user", "content": f"client {i}"}])) as r:
                assert r.status_code == 200, r.text
                text = ""
                for line in r.iter_lines():
                    if line.startswith(b"data: {"):
                        choices = json.loads(line[6:])["choices"]
                        text += "".join(c["delta"].get("content") or "" for c in choices)
                return text
        r = s.post(server.v1 + "/chat/completions", headers=AUTH, timeout=300,
                   data=chat(messages=[{"role": "user", "content": f"client {i}"}]))
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200)))
    hung_up = [i for i in range(200) if i % 20 == 7]
    assert [r for i, r in enumerate(results) if i not in hung_up] == [REPLY] * (200 - len(hung_up))
    health = server.wait_health(lambda h: not h["models"][0]["busy"] and not h["models"][0]["queued"])
    after = health["generations"]
    assert health["status"] == "ok" and after["failed"] == before["failed"], (health, server.log.read_text()[-4000:])
    assert after["completed"] - before["completed"] >= 200 - len(hung_up)
    # and the server still answers
    r = requests.post(server.v1 + "/chat/completions", data=chat(), headers=AUTH, timeout=120)
    assert r.json()["choices"][0]["message"]["content"] == REPLY
