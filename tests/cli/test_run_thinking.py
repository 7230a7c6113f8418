"""`localchat run` with a tiny reasoning model: stdout is the answer alone, the thought goes to stderr only
when asked (--show-thinking or the config), --no-think / --think / --thinking-budget reach the model."""

import json

import pytest

from tests.cli.test_run_cli import localchat
from tests.support.ggufgen import make_tiny_gguf
from tests.support.models import register_local_model
from tests.support.thinking_templates import ANSWER, KEEPS_THOUGHTS, QWEN3_STYLE, THOUGHT

pytestmark = pytest.mark.slow  # each test starts a worker on a tiny reasoning model



@pytest.fixture
def home(localchat_home, tmp_path):
    qwen3 = make_tiny_gguf(tmp_path / "qwen3.gguf", reply=ANSWER, thought=THOUGHT, chat_template=QWEN3_STYLE)
    keeps = make_tiny_gguf(tmp_path / "keeps.gguf", reply=ANSWER, thought=THOUGHT, chat_template=KEEPS_THOUGHTS)
    register_local_model(localchat_home, qwen3, model_id="thinker", template="gguf")
    register_local_model(localchat_home, keeps, model_id="noswitch", template="gguf")
    return localchat_home


def write_config(home, text: str) -> None:
    from localchat.paths import Paths

    Paths.from_env(home).config_file.write_text(text, encoding="utf-8")


def run(home, *args):
    out = localchat("run", *args, "--temperature", "0", "--repeat-penalty", "1", home=home)
    assert out.returncode == 0, out.stderr
    return out


def test_the_answer_alone_goes_to_stdout_and_the_thought_is_saved_apart(home):
    out = run(home, "thinker", "hello", "--stats")
    assert out.stdout == ANSWER + "\n"
    assert THOUGHT not in out.stderr and "<think>" not in out.stdout
    assert "of them thinking" in out.stderr
    exported = json.loads(localchat("history", "export", "last", "--format", "json", home=home).stdout)
    assert exported["messages"][-1]["content"] == ANSWER
    assert exported["localchat"]["messages"][-1]["reasoning"] == THOUGHT


def test_show_thinking_prints_the_thought_on_stderr(home):
    out = run(home, "thinker", "hello", "--show-thinking", "--no-save")
    assert out.stdout == ANSWER + "\n"
    assert out.stderr.startswith(THOUGHT + "\n\n"), "not a terminal: plain text, no escape codes"


def test_the_config_shows_thinking_unless_the_flag_says_no(home):
    write_config(home, "show_thinking: true\n")
    assert THOUGHT in run(home, "thinker", "hello", "--no-save").stderr
    assert THOUGHT not in run(home, "thinker", "hello", "--no-save", "--no-show-thinking").stderr


@pytest.mark.parametrize("model", ["thinker", "noswitch"])
def test_no_think_answers_without_a_thought(home, model):
    out = run(home, model, "hello", "--no-think", "--show-thinking", "--no-save")
    assert out.stdout == ANSWER + "\n" and THOUGHT not in out.stderr


def test_the_config_can_turn_thinking_off_and_think_turns_it_back_on(home):
    write_config(home, "models:\n  thinker:\n    thinking: off\n")
    assert THOUGHT not in run(home, "thinker", "hello", "--show-thinking", "--no-save").stderr
    assert THOUGHT in run(home, "thinker", "hello", "--think", "--show-thinking", "--no-save").stderr


def test_a_thinking_budget_shortens_the_thought(home):
    out = run(home, "thinker", "hello", "--thinking-budget", "5", "--show-thinking", "--no-save")
    assert out.stdout == ANSWER + "\n"
    shown = out.stderr.split("\n\n")[0]
    assert shown and THOUGHT.startswith(shown) and shown != THOUGHT
