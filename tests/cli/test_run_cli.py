"""`localchat run` end to end: a real worker, the real store, a subprocess like a user's shell."""

import json
import os
import subprocess
import sys

import pytest

from tests.support.models import register_local_model


def localchat(*args, home, input=None):
    return subprocess.run([sys.executable, "-m", "localchat", "--home", str(home), *args], capture_output=True,
                          text=True, input=input, timeout=300, env=os.environ.copy())


@pytest.fixture
def tiny_home(localchat_home, tiny_model):
    register_local_model(localchat_home, tiny_model)
    return localchat_home


def test_run_streams_the_reply_to_stdout(tiny_home):
    out = localchat("run", "tiny", "你好，介绍一下你自己", "--temperature", "0", "--stats", home=tiny_home)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hi 你好🙂!\n"
    assert "tokens/s" in out.stderr and "TTFT" in out.stderr


def test_run_reads_the_prompt_from_stdin_and_saves_the_exchange(tiny_home):
    out = localchat("run", "tiny", "--temperature", "0", home=tiny_home, input="a prompt from a pipe\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hi 你好🙂!\n"
    listing = localchat("history", home=tiny_home)
    assert "a prompt from a pipe" in listing.stdout
    exported = json.loads(localchat("history", "export", "last", "--format", "json", home=tiny_home).stdout)
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    assert exported["messages"][1]["content"] == "Hi 你好🙂!"


def test_continue_carries_the_history_into_the_next_turn(tiny_home):
    assert localchat("run", "tiny", "first", "--temperature", "0", home=tiny_home).returncode == 0
    out = localchat("run", "tiny", "second", "--continue", "--temperature", "0", home=tiny_home)
    assert out.returncode == 0, out.stderr
    exported = json.loads(localchat("history", "export", "last", "--format", "json", home=tiny_home).stdout)
    assert [m["content"] for m in exported["messages"]] == ["first", "Hi 你好🙂!", "second", "Hi 你好🙂!"]


def test_max_tokens_and_stop_strings(localchat_home, tiny_loop_model):
    register_local_model(localchat_home, tiny_loop_model, model_id="chatty")
    out = localchat("run", "chatty", "go", "--temperature", "0", "--max-tokens", "5", "--no-save", home=localchat_home)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "abcde\n" and "max-tokens" in out.stderr
    out = localchat("run", "chatty", "go", "--temperature", "0", "--stop", "fg", "--no-save", home=localchat_home)
    assert out.stdout == "abcde\n"


def test_bad_sampling_values_are_refused_before_loading(tiny_home):
    out = localchat("run", "tiny", "hi", "--temperature", "-1", home=tiny_home)
    assert out.returncode == 1 and "temperature" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_real_smollm2_answers_through_the_cli(localchat_home, smollm2_installed):
    out = localchat("run", smollm2_installed, "你好，介绍一下你自己", "--max-tokens", "48", "--seed", "1", home=localchat_home)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) > 0 and "\ufffd" not in out.stdout
