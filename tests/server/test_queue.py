"""Many clients on one model, fairness, disconnects, and the model pool (real worker processes)."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import openai
import psutil
import pytest
import requests

from tests.support.models import register_local_model
from tests.support.server import long_context

REPLY = "Hi 你好🙂!"


def test_twenty_concurrent_clients_all_complete(localchat_home, tiny_model, serve):
    register_local_model(localchat_home, tiny_model, "tiny")
    server = serve("--model", "tiny")
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)

    def one(i: int) -> str:
        if i % 2:
            stream = client.chat.completions.create(model="tiny", stream=True,
                                                    messages=[{"role": "user", "content": f"client {i}"}])
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"client {i}"}])
        return r.choices[0].message.content

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(one, range(20)))
    assert replies == [REPLY] * 20
    generations = server.health()["generations"]
    assert generations["completed"] == 20 and generations["failed"] == 0 and generations["cancelled"] == 0


def test_requests_for_a_busy_model_are_served_in_arrival_order(localchat_home, slow_loop_model, serve):
    register_local_model(localchat_home, slow_loop_model, "chatty")
    long_context(localchat_home, "chatty")
    server = serve("--model", "chatty", "--parallel", "1")  # one slot: the arrival-order line
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
    # One long reply holds the model while the others line up behind it, one after the other.
    holder = client.completions.create(model="chatty", prompt="hold", max_tokens=30000, stream=True)
    next(iter(holder))
    finished: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = requests.post(server.v1 + "/completions", timeout=300,
                          json={"model": "chatty", "prompt": f"request {i}", "max_tokens": 50})
        assert r.status_code == 200
        with lock:
            finished.append(i)

    threads = []
    for i in range(6):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        server.wait_health(lambda h, n=i: h["models"][0]["queued"] == n + 1)
    holder.close()
    for t in threads:
        t.join()
    assert finished == list(range(6))
    assert server.health()["generations"]["cancelled"] == 1


def test_client_disconnect_mid_stream_cancels_the_generation(localchat_home, slow_loop_model, serve):
    register_local_model(localchat_home, slow_loop_model, "chatty")
    long_context(localchat_home, "chatty")
    server = serve("--model", "chatty")
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
    stream = client.chat.completions.create(model="chatty", stream=True, max_tokens=30000,
                                            messages=[{"role": "user", "content": "talk"}])
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if len(received) > 20:
            break
    stream.close()  # the client goes away mid-reply
    # The worker itself reports the generation as cancelled (not finished at max_tokens or the window's end).
    # (/health is a snapshot: the count goes up on the event loop a moment before the turn is handed back.)
    health = server.wait_health(lambda h: h["generations"]["cancelled"] == 1 and not h["models"][0]["busy"])
    assert health["generations"]["completed"] == 0
    assert health["models"][0]["busy"] is False
    # The model is free at once for the next client.
    r = client.chat.completions.create(model="chatty", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5


def test_disconnects_while_waiting_or_before_a_full_reply_free_the_model(localchat_home, slow_loop_model, serve):
    register_local_model(localchat_home, slow_loop_model, "chatty")
    long_context(localchat_home, "chatty")
    server = serve("--model", "chatty", "--parallel", "1")  # one slot: others wait in line
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    body = b'{"model": "chatty", "prompt": "go", "max_tokens": 30000}'
    request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    # A non-streaming request that holds the model...
    holder = socket.create_connection((host, port))
    holder.sendall(request)
    server.wait_health(lambda h: h["models"][0]["busy"])
    # ...and one queued behind it; both clients hang up.
    queued = socket.create_connection((host, port))
    queued.sendall(request)
    server.wait_health(lambda h: h["models"][0]["queued"] == 1)
    queued.close()
    health = server.wait_health(lambda h: h["generations"]["left_queue"] == 1)
    assert health["models"][0]["busy"]  # the first one is still generating
    holder.close()
    health = server.wait_health(lambda h: h["generations"]["cancelled"] == 1 and not h["models"][0]["busy"])
    assert health["models"][0]["queued"] == 0 and health["generations"]["completed"] == 0


def test_max_models_keeps_several_loaded_and_evicts_the_least_recently_used(localchat_home, tiny_model, serve):
    for model_id in ("a", "b", "c"):
        register_local_model(localchat_home, tiny_model, model_id)
    server = serve("--max-models", "2")
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)

    def ask(model_id: str) -> None:
        r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content == REPLY

    for model_id in ("a", "b", "a", "b"):
        ask(model_id)
    health = server.health()
    assert (health["loads"], health["evictions"]) == (2, 0)
    assert {m["id"] for m in health["models"]} == {"a", "b"}
    ask("c")  # b was used last: a goes
    health = server.health()
    assert (health["loads"], health["evictions"]) == (3, 1)
    assert {m["id"] for m in health["models"]} == {"b", "c"}
    deadline = time.monotonic() + 60
    while len(worker_processes(server)) != 2:  # the evicted worker process ends: its memory goes back to the system
        assert time.monotonic() < deadline, "the evicted worker did not exit"
        time.sleep(0.05)


def test_one_model_by_default_swaps_between_requests(localchat_home, tiny_model, serve):
    for model_id in ("a", "b"):
        register_local_model(localchat_home, tiny_model, model_id)
    server = serve()
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda m: client.chat.completions.create(
            model=m, messages=[{"role": "user", "content": "x"}]).choices[0].message.content, "ababab"))
    assert replies == [REPLY] * 6
    health = server.health()
    assert len(health["models"]) == 1 and health["generations"]["completed"] == 6
    assert health["loads"] == health["evictions"] + 1


def worker_processes(server) -> list[psutil.Process]:
    return [p for p in psutil.Process(server.proc.pid).children(recursive=True)
            if "localchat.engine.worker" in " ".join(p.cmdline())]


def test_a_worker_crash_fails_that_request_and_the_next_one_gets_a_fresh_worker(localchat_home, slow_loop_model,
                                                                                  serve):
    register_local_model(localchat_home, slow_loop_model, "chatty")
    long_context(localchat_home, "chatty")
    server = serve("--model", "chatty")
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
    stream = client.chat.completions.create(model="chatty", stream=True, max_tokens=30000,
                                            messages=[{"role": "user", "content": "talk"}])
    (worker,) = worker_processes(server)
    received = ""
    with pytest.raises(openai.APIError, match="stopped unexpectedly"):
        for chunk in stream:
            received += chunk.choices[0].delta.content or ""
            if len(received) > 10 and worker.is_running():
                worker.kill()
    assert received.startswith("abcdefgh")
    r = client.chat.completions.create(model="chatty", max_tokens=3, messages=[{"role": "user", "content": "x"}])
    assert r.usage.completion_tokens == 3
    health = server.health()
    assert health["loads"] == 2 and health["generations"]["failed"] == 1


def test_stopping_the_server_mid_reply_ends_its_workers(localchat_home, slow_loop_model, serve):
    register_local_model(localchat_home, slow_loop_model, "chatty")
    long_context(localchat_home, "chatty")
    server = serve("--model", "chatty")
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
    stream = client.chat.completions.create(model="chatty", stream=True, max_tokens=30000,
                                            messages=[{"role": "user", "content": "talk"}])
    next(iter(stream))
    workers = worker_processes(server)
    assert len(workers) == 1
    assert server.stop() == 0  # at once: the running reply is ended, not waited for
    with pytest.raises(openai.APIError, match="shutting down"):
        for _ in stream:
            pass
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
    assert "localchat: server stopped" in server.log.read_text()


def test_a_model_that_fails_to_load_is_a_500_and_the_server_stays_up(localchat_home, tiny_model, tmp_path, serve):
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + b"\x00" * 64)
    register_local_model(localchat_home, bogus, "broken")
    register_local_model(localchat_home, tiny_model, "tiny")
    server = serve()
    body = {"messages": [{"role": "user", "content": "x"}]}
    for _ in range(2):  # each request tries again (the file may have been fixed meanwhile)
        r = requests.post(server.v1 + "/chat/completions", json={"model": "broken", **body}, timeout=120)
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error" and r.json()["error"]["message"]
    r = requests.post(server.v1 + "/chat/completions", json={"model": "tiny", **body}, timeout=120)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == REPLY
    assert [m["id"] for m in server.health()["models"]] == ["tiny"]


def test_parallel_slots_refuse_an_oversized_prompt_and_free_a_slot_the_moment_its_client_hangs_up(
        localchat_home, slow_loop_model, serve):
    register_local_model(localchat_home, slow_loop_model, "chatty")
    long_context(localchat_home, "chatty", n_ctx=4096)  # per slot
    server = serve("--model", "chatty", "--parallel", "2")
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)

    def hold(name: str):
        stream = client.chat.completions.create(model="chatty", stream=True, max_tokens=3000,
                                                messages=[{"role": "user", "content": name}])
        chunks = iter(stream)
        next(chunks)
        return stream, chunks

    a, a_chunks = hold("a")
    # A prompt too long for a slot: a 400 in OpenAI's error shape; the running stream does not notice.
    r = requests.post(server.v1 + "/chat/completions", timeout=300,
                      json={"model": "chatty", "messages": [{"role": "user", "content": "ab " * 3000}]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and "parallel slot" in error["message"]
    assert error["type"] == "invalid_request_error"
    received = "".join(next(a_chunks).choices[0].delta.content or "" for _ in range(20))
    assert "abcdefgh" in received
    # Both slots busy, a third request waits; the second client hangs up and the third starts at once.
    b, _ = hold("b")
    server.wait_health(lambda h: h["models"][0]["running"] == 2)
    third: dict = {}
    waiter = threading.Thread(target=lambda: third.update(r=client.chat.completions.create(
        model="chatty", max_tokens=5, messages=[{"role": "user", "content": "c"}])))
    waiter.start()
    server.wait_health(lambda h: h["models"][0]["queued"] == 1)
    b.close()
    waiter.join(60)
    assert third["r"].choices[0].finish_reason == "length" and third["r"].usage.completion_tokens == 5
    health = server.health()
    assert health["models"][0]["running"] == 1  # the first stream is still going
    assert health["generations"]["cancelled"] == 1 and health["generations"]["completed"] == 1
    a.close()
    health = server.wait_health(lambda h: h["generations"]["cancelled"] == 2 and not h["models"][0]["busy"])
    assert health["generations"]["failed"] == 1  # the oversized prompt
