"""Correctness guard: with temperature 0 the engine picks exactly the tokens llama-cpp-python's own
`Llama.generate()` picks on the same prompt and settings; and on a real model a second turn reuses the cache."""

from __future__ import annotations

import pytest

from localchat.engine.api import answer_text
from localchat.types import SamplingParams
from tests.support.ggufgen import CHAT_PROMPT, TINY_REPLY

SMOL_PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France? Answer in two sentences.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
]
THREADS = 2


def llama_cpp_python_greedy(path, prompt: str, max_tokens: int) -> tuple[list[int], bytes]:
    """Greedy tokens from llama-cpp-python's high-level API, stopping at an end-of-generation token."""
    import llama_cpp

    from localchat.engine.llama.bindings import avoid_amx

    avoid_amx()  # as the engine does: AMX weight buffers only where the self-test passed (engine/amx.py)
    llm = llama_cpp.Llama(str(path), n_ctx=2048, n_batch=512, n_threads=THREADS, n_threads_batch=THREADS,
                          flash_attn=True, verbose=False)
    try:
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        out: list[int] = []
        for token in llm.generate(tokens, temp=0.0, repeat_penalty=1.0):
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                break
            out.append(token)
            if len(out) >= max_tokens:
                break
        return out, llm.detokenize(out)
    finally:
        llm.close()


def engine_greedy(start, path, prompt: str, max_tokens: int):
    client = start(path, flash_attn="on", n_threads=THREADS, n_batch=512)
    gen = client.generate(prompt, SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=max_tokens))
    return answer_text(gen), gen.usage


def test_greedy_matches_llama_cpp_python_on_the_tiny_model(start, tiny_model):
    tokens, data = llama_cpp_python_greedy(tiny_model, CHAT_PROMPT, 64)
    text, usage = engine_greedy(start, tiny_model, CHAT_PROMPT, 64)
    assert data.decode("utf-8") == text == TINY_REPLY
    assert usage.completion_tokens == len(tokens)


@pytest.mark.slow
@pytest.mark.parametrize("prompt", SMOL_PROMPTS)
def test_greedy_matches_llama_cpp_python_on_smollm2(start, smollm2_path, prompt):
    tokens, data = llama_cpp_python_greedy(smollm2_path, prompt, 96)
    text, usage = engine_greedy(start, smollm2_path, prompt, 96)
    assert usage.completion_tokens == len(tokens)
    # an unfinished character at the max_tokens cut is dropped by the engine, so compare whole characters
    assert text == data.decode("utf-8", "ignore")
    assert len(text) > 20


@pytest.mark.slow
def test_smollm2_second_turn_evaluates_only_the_new_tokens(start, smollm2_path):
    client = start(smollm2_path)
    greedy = SamplingParams(temperature=0.0, max_tokens=48)
    first = client.generate(SMOL_PROMPTS[0], greedy)
    reply = answer_text(first)
    assert reply.strip()
    new_part = "<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"
    second = client.generate(SMOL_PROMPTS[0] + reply + new_part, greedy)
    assert answer_text(second).strip()
    usage = second.usage
    assert usage.prompt_tokens == client.count_tokens([SMOL_PROMPTS[0] + reply + new_part])[0]
    # the reply's tokens may re-tokenize differently at its edges; everything before them is reused
    assert usage.prompt_eval_tokens <= client.count_tokens([new_part])[0] + 3
    assert usage.prompt_eval_tokens < usage.prompt_tokens // 2
