"""`localchat run` under a small context window and with its model worker dying mid-reply.

A conversation longer than the window drops its oldest turns with a notice on stderr; a single message
longer than the window is refused in one line (exit 1) and nothing is half-saved. A worker killed mid-reply
(SIGKILL, which is also what the kernel's OOM killer sends; SIGSEGV; SIGABRT, what an allocation failure
inside llama.cpp ends in) is reported in one line, exit 1, and the partial reply stays in the history
marked as an error; the next `run` loads the model again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.models import register_local_model


def localchat(*args, home, input=None):
    return subprocess.run([sys.executable, "-m", "localchat", "--home", str(home), *args], capture_output=True,
                          text=True, input=input, timeout=300, env=os.environ.copy())


def exported(home) -> dict:
    out = localchat("history", "export", "last", "--format", "json", home=home)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def tiny_home(localchat_home, tiny_model):
    register_local_model(localchat_home, tiny_model)
    return localchat_home


N_CTX = "256"  # the tiny model's tokenizer spends about a token per character; 64 are kept for the reply


def test_a_conversation_longer_than_the_window_drops_old_turns_with_a_notice(tiny_home):
    words = "one two three four five six seven eight nine ten " * 2  # ~100 tokens a message
    first = localchat("run", "tiny", "A " + words, "--n-ctx", N_CTX, "--temperature", "0", home=tiny_home)
    assert first.returncode == 0, first.stderr
    assert "no longer fit" not in first.stderr
    for turn in "BC":
        out = localchat("run", "tiny", turn + " " + words, "--continue", "--n-ctx", N_CTX, "--temperature", "0",
                        home=tiny_home)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "Hi 你好🙂!\n"
    assert "localchat: note:" in out.stderr and "no longer fit the 256-token context window" in out.stderr
    # the history keeps every turn: only what the model sees was shortened
    contents = [m["content"] for m in exported(tiny_home)["messages"]]
    assert [c[:1] for c in contents[::2]] == ["A", "B", "C"]


def test_a_single_message_longer_than_the_window_is_one_clear_line(tiny_home):
    before = localchat("run", "tiny", "short", "--n-ctx", N_CTX, "--temperature", "0", home=tiny_home)
    assert before.returncode == 0, before.stderr
    out = localchat("run", "tiny", "--continue", "--n-ctx", N_CTX, home=tiny_home, input="word " * 400)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("localchat: error: the message is too long for the context window")
    assert "n_ctx" in lines[0] and "Traceback" not in out.stderr
    assert out.stdout == ""
    # nothing half-saved: the conversation holds the earlier exchange only
    assert [m["content"] for m in exported(tiny_home)["messages"]] == ["short", "Hi 你好🙂!"]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker through /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT])
def test_worker_death_mid_reply_is_one_line_and_the_partial_reply_is_kept(localchat_home, tiny_loop_model, sig):
    register_local_model(localchat_home, tiny_loop_model, model_id="chatty")
    proc = subprocess.Popen([sys.executable, "-m", "localchat", "--home", str(localchat_home), "run", "chatty", "go",
                             "--temperature", "0", "--max-tokens", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(), bufsize=0)
    try:
        received = b""
        while len(received) < 64:  # the reply is streaming: the worker is mid-generation
            chunk = proc.stdout.read(64)
            assert chunk, proc.stderr.read().decode()
            received += chunk
        assert received.startswith(b"abcdefgh"), received
        workers = _children(proc.pid)
        assert len(workers) == 1, workers
        os.kill(workers[0], sig)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith("localchat: error: the model worker for ") and f"killed by {sig.name}" in lines[0]
    assert "log" in lines[0]
    messages = exported(localchat_home)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply["content"].startswith("abcdefgh") and len(reply["content"]) >= 64
    assert (received + rest).decode().startswith(reply["content"])
    meta = exported(localchat_home)
    statuses = json.dumps(meta)
    assert '"status": "error"' in statuses
    # the model loads again on the next run
    again = localchat("run", "chatty", "go", "--temperature", "0", "--max-tokens", "5", "--no-save", home=localchat_home)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "abcde\n"
