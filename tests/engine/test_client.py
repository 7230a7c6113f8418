"""The engine end to end: worker process, pipe, client, on the tiny generated models."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from localchat.engine import EngineClient, build_info
from localchat.engine.api import answer_text
from localchat.errors import ContextOverflowError, EngineError, ModelLoadError, WorkerCrashed
from localchat.types import LoadOptions, SamplingParams
from tests.support.ggufgen import CHAT_PROMPT, TINY_REPLY

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)


def greedy(**kw) -> SamplingParams:
    return SamplingParams(**{**GREEDY.to_dict(), **kw})


def test_loaded_model_reports_its_metadata(tiny, tiny_model):
    info = tiny.info
    assert info.path == str(tiny_model)
    assert info.architecture == "llama"
    assert (info.n_layer, info.n_ctx_train, info.n_ctx) == (2, 2048, 2048)
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert (info.bos_token, info.eos_token) == ("<|endoftext|>", "<|im_end|>")
    assert info.n_threads >= 1 and info.kv_type == "f16"
    assert info.load_seconds > 0
    assert any("n_gpu_layers" in note for note in info.notes)
    assert any("flash attention" in note for note in info.notes)


def test_streams_exact_text_with_split_characters_reassembled(tiny):
    gen = tiny.generate(CHAT_PROMPT, GREEDY)
    deltas = list(gen)
    assert answer_text(deltas) == TINY_REPLY == gen.text
    assert not any("\ufffd" in d.text for d in deltas)
    assert gen.finish_reason == "stop"
    # 7 characters came as 13 tokens: the CJK characters and the emoji really were split across tokens.
    assert gen.usage.completion_tokens == 13
    assert tiny.count_tokens(["你", "🙂"]) == [3, 4]


def test_usage_counts(tiny):
    gen = tiny.generate(CHAT_PROMPT, GREEDY)
    list(gen)
    usage = gen.usage
    assert usage.prompt_tokens == tiny.count_tokens([CHAT_PROMPT])[0] == 24
    assert usage.prompt_eval_tokens == usage.prompt_tokens  # nothing cached yet
    assert usage.completion_tokens == 13
    assert usage.finish_reason == "stop"
    assert usage.ttft > 0 and usage.prompt_seconds > 0 and usage.decode_seconds > 0
    assert usage.tokens_per_second == pytest.approx(12 / usage.decode_seconds)


def test_max_tokens_ends_with_length(looping):
    gen = looping.generate(CHAT_PROMPT, greedy(max_tokens=5))
    assert answer_text(gen) == "abcde"
    assert gen.finish_reason == "length"
    assert gen.usage.completion_tokens == 5


def test_full_context_ends_with_length(start, tiny_loop_model):
    client = start(tiny_loop_model, n_ctx=256)
    gen = client.generate(CHAT_PROMPT, greedy(max_tokens=100_000))
    text = answer_text(gen)
    assert gen.finish_reason == "length"
    assert gen.usage.prompt_tokens + gen.usage.completion_tokens == client.info.n_ctx + 1
    assert text.startswith("abcdefgh abcdefgh")


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (("好",), "Hi 你"),  # a stop string in the middle of the reply
        (("🙂!", "zz"), "Hi 你好"),  # one spanning several tokens (and characters)
        (("i 你",), "H"),
        (("你x",), TINY_REPLY),  # "你" is held back as a possible start, then released
        (("!",), "Hi 你好🙂"),
        (("nothing like it",), TINY_REPLY),
    ],
)
def test_stop_strings_are_never_emitted(tiny, stop, expected):
    gen = tiny.generate(CHAT_PROMPT, greedy(stop=stop))
    deltas = list(gen)
    assert answer_text(deltas) == expected
    assert gen.finish_reason == "stop"


def test_cancel_from_another_thread(looping):
    gen = looping.generate(CHAT_PROMPT, greedy(max_tokens=100_000))
    first = next(gen).text
    assert first
    threading.Thread(target=gen.cancel).start()
    rest = answer_text(gen)
    assert gen.finish_reason == "cancelled"
    assert gen.text == first + rest
    assert gen.usage.completion_tokens < 2000  # stopped long before the context (2048) filled
    # the client is ready for the next generation at once
    gen2 = looping.generate(CHAT_PROMPT, greedy(max_tokens=3))
    assert answer_text(gen2) == "abc"


def test_cancel_after_the_end_is_harmless(tiny):
    gen = tiny.generate(CHAT_PROMPT, GREEDY)
    assert answer_text(gen) == TINY_REPLY
    gen.cancel()
    assert gen.finish_reason == "stop"
    assert answer_text(tiny.generate(CHAT_PROMPT, GREEDY)) == TINY_REPLY


def test_second_generation_waits_for_the_first(looping):
    first = looping.generate(CHAT_PROMPT, greedy(max_tokens=100_000))
    next(first)
    result: dict = {}

    def second() -> None:
        gen = looping.generate(CHAT_PROMPT, greedy(max_tokens=4))
        result["text"] = answer_text(gen)
        result["reason"] = gen.finish_reason

    thread = threading.Thread(target=second)
    thread.start()
    first.cancel()
    list(first)
    thread.join(timeout=60)
    assert first.finish_reason == "cancelled"
    assert result == {"text": "abcd", "reason": "length"}


def test_killed_worker_raises_worker_crashed_and_keeps_the_text(looping, start, tiny_loop_model):
    gen = looping.generate(CHAT_PROMPT, greedy(max_tokens=1_000_000))
    received = ""
    while len(received) < 20:
        received += next(gen).text
    os.kill(looping.pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed) as caught:
        for delta in gen:
            received += delta.text
    assert gen.text == received and received.startswith("abcdefgh abcdefgh ab")
    error = caught.value
    assert "SIGKILL" in error.message
    assert error.log_lines and any("localchat worker" in line for line in error.log_lines)
    assert str(looping.log_path) in error.hint
    assert not looping.alive
    with pytest.raises(WorkerCrashed):
        looping.generate(CHAT_PROMPT, GREEDY)
    with pytest.raises(WorkerCrashed):
        looping.count_tokens(["abc"])
    looping.close()  # still fine to close
    # a new worker for the same model starts and works
    again = start(tiny_loop_model)
    assert answer_text(again.generate(CHAT_PROMPT, greedy(max_tokens=3))) == "abc"


def test_second_turn_evaluates_only_the_new_tokens(tiny):
    first = tiny.generate(CHAT_PROMPT, GREEDY)
    reply = answer_text(first)
    prompt2 = CHAT_PROMPT + reply + "<|im_end|>\n<|im_start|>user\nand now?<|im_end|>\n<|im_start|>assistant\n"
    second = tiny.generate(prompt2, GREEDY)
    assert answer_text(second) == TINY_REPLY
    cached = first.usage.prompt_tokens + first.usage.completion_tokens
    assert second.usage.prompt_tokens == tiny.count_tokens([prompt2])[0]
    assert second.usage.prompt_eval_tokens == second.usage.prompt_tokens - cached
    # the very same prompt again: only its last token is evaluated (it yields the next-token logits)
    third = tiny.generate(prompt2, GREEDY)
    assert answer_text(third) == TINY_REPLY
    assert third.usage.prompt_eval_tokens == 1
    # a different conversation shares only its first tokens ("<|im_start|>user\n") with the cache
    other = tiny.generate("<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n", GREEDY)
    assert answer_text(other) == TINY_REPLY
    shared = tiny.count_tokens(["<|im_start|>user\n"])[0]
    assert other.usage.prompt_eval_tokens == other.usage.prompt_tokens - shared


def test_prompt_longer_than_the_context_is_a_clear_error(start, tiny_model):
    client = start(tiny_model, n_ctx=256)
    gen = client.generate("<|im_start|>user\n" + "word " * 200 + "<|im_end|>\n<|im_start|>assistant\n", GREEDY)
    with pytest.raises(ContextOverflowError) as caught:
        list(gen)
    assert isinstance(caught.value, EngineError)
    assert "context window holds 256" in str(caught.value)
    assert answer_text(client.generate(CHAT_PROMPT, GREEDY)) == TINY_REPLY


@pytest.mark.slow  # starts a worker (llama.cpp refuses the file)
def test_a_file_that_is_not_a_model_is_refused_clearly(tmp_path, log_dir):
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("these are my notes, not a model\n")
    with pytest.raises(ModelLoadError) as caught:
        EngineClient.start(bogus, LoadOptions(), log_dir)
    assert "notes.gguf is not a GGUF model file" in str(caught.value)


def test_a_truncated_model_is_refused_with_llama_cpps_reason(tmp_path, log_dir, tiny_model, start):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_model.read_bytes()[:200_000])
    with pytest.raises(ModelLoadError) as caught:
        EngineClient.start(broken, LoadOptions(), log_dir)
    assert "could not load broken.gguf" in caught.value.message
    assert "corrupted or incomplete" in caught.value.message
    assert (log_dir / "broken.log").is_file()
    # the parent is fine and can load a real model right after
    assert answer_text(start(tiny_model).generate(CHAT_PROMPT, GREEDY)) == TINY_REPLY


def test_quantized_kv_cache_without_flash_attention_falls_back_and_says_so(start, tiny_model):
    # llama.cpp refuses a quantized V cache without flash attention: K stays q8_0, V falls back to f16.
    client = start(tiny_model, kv_type="q8_0", flash_attn="off")
    assert not client.info.flash_attn
    assert any("V cache f16" in n and "needs flash attention" in n for n in client.info.notes)
    assert answer_text(client.generate(CHAT_PROMPT, GREEDY)) == TINY_REPLY


def test_quantized_kv_cache_works(start, tiny_model):
    client = start(tiny_model, kv_type="q8_0", flash_attn="auto")
    assert client.info.kv_type == "q8_0" and client.info.flash_attn
    assert answer_text(client.generate(CHAT_PROMPT, GREEDY)) == TINY_REPLY


def test_count_tokens(tiny):
    assert tiny.count_tokens(["hello", "<|im_start|>", "", CHAT_PROMPT]) == [5, 1, 0, 24]
    assert tiny.count_tokens([]) == []


def test_count_tokens_answers_during_a_generation(looping):
    gen = looping.generate(CHAT_PROMPT, greedy(max_tokens=100_000))
    next(gen)
    assert looping.count_tokens(["abc"]) == [3]
    gen.cancel()
    list(gen)


def test_seeded_sampling_is_reproducible(looping):
    # A high temperature flattens the tiny model's distribution, so the tokens really are random draws.
    def sample(seed: int) -> str:
        params = SamplingParams(temperature=50.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                max_tokens=40, seed=seed)
        return answer_text(looping.generate(CHAT_PROMPT, params))

    a, b, c = sample(7), sample(7), sample(8)
    assert a == b
    assert a != c


def test_sampling_settings_run_in_the_native_chain(tiny):
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1,
                            presence_penalty=0.1, frequency_penalty=0.1, seed=1)
    gen = tiny.generate(CHAT_PROMPT, params)
    assert answer_text(gen) == TINY_REPLY  # the chain's logits (~20 vs ~1) survive any of these settings


def test_close_is_idempotent_and_ends_the_worker(tiny_model, log_dir):
    with EngineClient.start(tiny_model, LoadOptions(n_ctx=512), log_dir) as client:
        pid = client.pid
        assert client.alive
    assert not client.alive
    client.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(EngineError):
        client.generate(CHAT_PROMPT, GREEDY)


def test_worker_log_holds_llama_cpp_messages(tiny):
    text = tiny.log_path.read_text()
    assert "localchat engine worker for" in text
    assert "llama_context" in text  # llama.cpp's own log lines, not on our terminal


def test_build_info():
    info = build_info()
    assert info["llama_cpp_python"]
    assert isinstance(info["gpu_offload"], bool)
    assert any(d["type"] == "CPU" and d["total_bytes"] > 0 for d in info["devices"])
    assert "CPU" in info["system_info"]


def test_bad_sampling_settings_are_refused_before_anything_runs(tiny):
    from localchat.errors import ConfigError

    with pytest.raises(ConfigError, match="top_p"):
        tiny.generate(CHAT_PROMPT, greedy(top_p=0.0))
    assert answer_text(tiny.generate(CHAT_PROMPT, GREEDY)) == TINY_REPLY  # nothing was left half-started


def test_flash_attention_auto_is_off_for_a_model_on_the_cpu_and_on_when_asked(start, tiny_model):
    # llama.cpp's CPU flash-attention kernel decodes 1.2-2.5x slower at a few hundred tokens of context
    # (docs/benchmarks.md), so auto leaves it off where every layer runs on the CPU; `on` still turns it on.
    auto = start(tiny_model, flash_attn="auto", n_gpu_layers=0)
    assert auto.info.n_gpu_layers == 0 and not auto.info.flash_attn
    assert any(n.startswith("flash attention auto: off (the model runs on the CPU") for n in auto.info.notes)
    assert answer_text(auto.generate(CHAT_PROMPT, GREEDY)) == TINY_REPLY
    auto.close()
    forced = start(tiny_model, flash_attn="on", n_gpu_layers=0)
    assert forced.info.flash_attn and "flash attention on as requested" in forced.info.notes
    assert answer_text(forced.generate(CHAT_PROMPT, GREEDY)) == TINY_REPLY


def test_auto_threads_step_aside_for_busy_programs_and_come_back(start, tiny_loop_model):
    import subprocess
    import sys
    import time

    from localchat.engine.llama.model import physical_cores

    if physical_cores() < 2 or not os.path.exists("/proc/stat"):
        pytest.skip("needs Linux and 2 or more cores")
    client = start(tiny_loop_model)  # n_threads auto
    assert client.info.n_threads == physical_cores()
    assert any(n.startswith("threads auto: up to") for n in client.info.notes)
    long = greedy(max_tokens=2000)  # the first look comes a quarter of a second into a reply

    def reply_threads() -> int:
        gen = client.generate(CHAT_PROMPT, long)
        assert answer_text(gen).startswith("abcdefgh abcdefgh")
        return gen.usage.threads

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        time.sleep(0.5)
        used = [reply_threads() for _ in range(2)]
        assert used[-1] == 1, used  # every CPU busy elsewhere: one thread, which cannot stall at a barrier
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    deadline = time.monotonic() + 30  # a shared machine's other load can linger: keep looking for a while
    while True:
        time.sleep(0.3)
        if (threads := reply_threads()) == physical_cores() or time.monotonic() > deadline:
            break
    assert threads == physical_cores()


def test_explicit_threads_stay_fixed(start, tiny_model):
    client = start(tiny_model, n_threads=1)
    gen = client.generate(CHAT_PROMPT, GREEDY)
    assert answer_text(gen) == TINY_REPLY and gen.usage.threads == 1
    assert not any(n.startswith("threads auto") for n in client.info.notes)
