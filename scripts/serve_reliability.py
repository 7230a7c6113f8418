"""The batched server under a crowd (`scripts/bench serve --reliability`): many requests from many clients on
127.0.0.1, some streaming, some not, a quarter hanging up mid-reply, mixed lengths and sampling, then every
completed request asked again alone. Checks: each completed reply is whole and belongs to its request (it
equals the same request answered alone, or the report says by how much it differs), the server's counters
add up, the worker's memory returns to its level, and a prompt too long for a slot gets a clear 400.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from dataclasses import dataclass

SYSTEMS = ["You are a careful assistant. Answer in one short paragraph and never use lists. " * 2,
           "You translate everything the user says into French, politely. " * 2, ""]


@dataclass
class Spec:
    i: int
    messages: list[dict]
    stream: bool
    hang_up: bool
    max_tokens: int
    sampling: dict

    def body(self, model: str) -> str:
        return json.dumps({"model": model, "messages": self.messages, "stream": self.stream,
                           "max_tokens": self.max_tokens, **self.sampling,
                           **({"stream_options": {"include_usage": True}} if self.stream else {})})


def specs(n: int, seed: int = 0) -> list[Spec]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        system = SYSTEMS[i % len(SYSTEMS)]
        words = " ".join(rng.choice(["apple", "river", "seven", "cloud", "green", "stone"]) for _ in range(rng.randint(1, 60)))
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": f"question {i}: {words}"}]
        greedy = i % 3 != 0
        sampling = {"temperature": 0} if greedy else {"temperature": 0.9, "top_p": 0.9, "seed": i}
        out.append(Spec(i, messages, stream=i % 2 == 0, hang_up=i % 4 == 1, max_tokens=rng.choice([1, 4, 16, 48]),
                        sampling=sampling))
    return out


def ask(port: int, model: str, spec: Spec, timeout: float = 300) -> dict:
    """One request. A hang-up closes the connection after the first streamed chunk, or (not streaming) a
    moment after sending."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", spec.body(model), {"Content-Type": "application/json"})
        if spec.hang_up and not spec.stream:
            time.sleep(0.01 * (spec.i % 7))
            conn.sock.shutdown(socket.SHUT_RDWR)
            return {"hung_up": True}
        resp = conn.getresponse()
        if resp.status != 200:
            return {"status": resp.status, "error": json.loads(resp.read() or b"{}")}
        if not spec.stream:
            data = json.loads(resp.read())
            choice = data["choices"][0]
            return {"text": choice["message"]["content"], "finish": choice["finish_reason"], "usage": data["usage"]}
        text, finish, usage = [], None, None
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            if line[5:].strip() == b"[DONE]":
                break
            event = json.loads(line[5:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                text.append((choice.get("delta") or {}).get("content") or "")
                finish = choice.get("finish_reason") or finish
            if spec.hang_up and any(text):
                conn.sock.shutdown(socket.SHUT_RDWR)
                return {"hung_up": True}
        return {"text": "".join(text), "finish": finish, "usage": usage}
    except OSError as e:
        return {"hung_up": spec.hang_up, "error": str(e)} if spec.hang_up else {"error": str(e)}
    finally:
        conn.close()


def crowd(port: int, model: str, todo: list[Spec], clients: int) -> dict[int, dict]:
    results: dict[int, dict] = {}
    lock = threading.Lock()
    queue = iter(todo)

    def client() -> None:
        while True:
            with lock:
                spec = next(queue, None)
            if spec is None:
                return
            r = ask(port, model, spec)
            with lock:
                results[spec.i] = r

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def run(port: int, model: str, worker_rss, n: int = 400, clients: int = 32, ctx_slot: int = 1024) -> dict:
    """worker_rss() -> bytes the model's worker holds. Returns the figures; `problems` lists what failed."""
    problems: list[str] = []
    todo = specs(n)
    ask(port, model, todo[0])  # load the model and warm every path once
    ask(port, model, Spec(-1, todo[1].messages, True, False, 8, {"temperature": 0}))
    # a first crowd of the same mix, so the level compared against is the worker's after its allocators and
    # llama.cpp's buffers have seen every batch shape (a leak keeps growing through the second crowd)
    crowd(port, model, specs(n // 2, seed=1), clients)
    rss_before, before = worker_rss(), health(port)["generations"]
    t0 = time.perf_counter()
    overflow: dict = {}

    def too_long() -> None:  # while the crowd runs: a prompt no slot can hold
        time.sleep(0.5)
        big = Spec(-2, [{"role": "user", "content": "seven " * ctx_slot}], False, False, 4, {"temperature": 0})
        overflow.update(ask(port, model, big))

    side = threading.Thread(target=too_long)
    side.start()
    results = crowd(port, model, todo, clients)
    side.join()
    wall = time.perf_counter() - t0
    after = health(port)["generations"]
    if overflow.get("status") != 400:
        problems.append(f"a prompt too long for its slot got {overflow} instead of a 400")
    completed = {i: r for i, r in results.items() if "text" in r}
    errors = {i: r for i, r in results.items() if "error" in r and not r.get("hung_up")}
    for i, r in errors.items():
        problems.append(f"request {i} failed: {r}")
    # alone: each completed request again, one at a time
    alone = {i: ask(port, model, todo[i]) for i in sorted(completed)}
    same = differ = 0
    diffs = []
    for i, r in completed.items():
        a = alone[i]
        if r["usage"] is None or r["finish"] not in ("stop", "length"):
            problems.append(f"request {i}: no usage or finish reason ({r['finish']})")
        if r["text"] == a.get("text"):
            same += 1
        else:
            differ += 1
            common = next((k for k, (x, y) in enumerate(zip(r["text"], a.get("text", ""))) if x != y),
                          min(len(r["text"]), len(a.get("text", ""))))
            diffs.append({"request": i, "greedy": todo[i].sampling.get("temperature") == 0, "same_chars": common,
                          "chars": len(r["text"]), "alone_chars": len(a.get("text", ""))})
    rss_after = worker_rss()
    sent = n + 1  # the crowd and the prompt that did not fit
    d = {k: after[k] - before[k] for k in after}
    outcomes = d["completed"] + d["cancelled"] + d["failed"] + d["left_queue"]
    if d["requests"] != sent or outcomes != sent:
        problems.append(f"counters: {sent} requests sent, the server counted {d}")
    if d["completed"] < len(completed):
        problems.append(f"counters: {len(completed)} replies arrived whole, the server counted {d['completed']} completed")
    hung_up = sum(1 for r in results.values() if r.get("hung_up"))
    grew = (rss_after - rss_before) / rss_before if rss_before else 0.0
    if grew > 0.10:
        problems.append(f"worker memory grew {grew:.1%} ({rss_before / 1e6:.0f} -> {rss_after / 1e6:.0f} MB)")
    return {"requests": n, "clients": clients, "wall_s": wall, "completed": len(completed), "hung_up": hung_up,
            "same_as_alone": same, "differ_from_alone": differ, "diffs": diffs[:20], "counters": d,
            "overflow": overflow, "rss_before_mb": rss_before / 1e6, "rss_after_mb": rss_after / 1e6,
            "problems": problems}
