"""Model swap: each swap starts a new worker and ends the old one, so the parent's memory stays put."""

from __future__ import annotations

import psutil

from localchat.engine import EngineClient
from localchat.engine.api import answer_text
from localchat.types import LoadOptions, SamplingParams

CHAT_PROMPT = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_20_swaps_leave_the_parents_memory_where_it_started(tiny_model, tiny_loop_model, log_dir):
    me = psutil.Process()
    options = LoadOptions(n_ctx=256)
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    client = EngineClient.start(tiny_model, options, log_dir)
    answer_text(client.generate(CHAT_PROMPT, greedy))  # threads, imports and buffers of the first use
    start_rss = me.memory_info().rss
    pids = {client.pid}
    try:
        for i in range(20):
            path = tiny_loop_model if i % 2 == 0 else tiny_model
            old, client = client, None
            old.close()
            assert not old.alive
            client = EngineClient.start(path, options, log_dir)
            pids.add(client.pid)
            assert answer_text(client.generate(CHAT_PROMPT, greedy))
    finally:
        if client is not None:
            client.close()
    assert len(pids) == 21  # a new process per swap
    assert me.memory_info().rss - start_rss < 50 * 1024 * 1024
    assert not [c for c in me.children(recursive=True) if c.pid in pids and c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
