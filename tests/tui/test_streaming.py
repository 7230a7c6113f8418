"""Pacing a streamed reply into a real Markdown widget; handing text over from a worker thread."""

import asyncio
import threading
from types import SimpleNamespace

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Markdown

from localchat.tui.streaming import CPU_SHARE, SPARE_CORE_SHARE, DeltaBuffer, ReplyStream, cpu_share_for


def test_a_wake_up_is_posted_only_when_the_stream_is_idle():
    wakes = []
    buffer = DeltaBuffer(lambda: wakes.append(1))
    buffer.put("a")
    buffer.put("b")  # the stream has not looked yet: no second message
    assert len(wakes) == 1
    assert buffer.take() == "ab"
    buffer.put("c")  # it found text last time, so it comes back by itself
    assert len(wakes) == 1
    assert buffer.take() == "c"
    assert buffer.take() == ""  # nothing: it goes idle, and the next text wakes it
    buffer.put("d")
    assert len(wakes) == 2


def test_text_from_many_threads_arrives_whole_and_in_order():
    buffer = DeltaBuffer(lambda: None)
    parts = [f"{i}," for i in range(5000)]

    def produce():
        for p in parts:
            buffer.put(p)

    t = threading.Thread(target=produce)
    t.start()
    got = []
    while t.is_alive():
        got.append(buffer.take())
    t.join()
    got.append(buffer.take())
    assert "".join(got) == "".join(parts)


def test_ui_share_depends_on_whether_the_model_leaves_a_core_free():
    cpu = SimpleNamespace(n_threads=4, n_layer=24, n_gpu_layers=0)
    assert cpu_share_for(cpu, 4) == CPU_SHARE  # every CPU busy with the model
    assert cpu_share_for(cpu, 8) == SPARE_CORE_SHARE  # hyperthreads left over
    gpu = SimpleNamespace(n_threads=4, n_layer=24, n_gpu_layers=24)
    assert cpu_share_for(gpu, 4) == SPARE_CORE_SHARE  # the GPU does the work


class OneMarkdown(App):
    def compose(self) -> ComposeResult:
        yield Markdown()


@pytest.mark.asyncio
async def test_stream_batches_writes_and_keeps_every_character():
    app = OneMarkdown()
    async with app.run_test() as pilot:
        md = app.query_one(Markdown)
        buffer = DeltaBuffer(lambda: app.call_later(stream.wake))
        stream = ReplyStream(md, buffer.take).start()
        text = "".join(f"word{i} " for i in range(400)) + "\n\n```python\nprint('done')\n```\n"
        for i in range(0, len(text), 3):
            buffer.put(text[i:i + 3])
            if i % 60 == 0:
                await asyncio.sleep(0.01)
        await stream.stop()
        await pilot.pause()
        assert md.source == text
        assert 1 <= stream.appends < len(text) // 3 // 10  # far fewer appends than pieces of text
