"""The reasoning splitter: thought and answer apart, whatever the piece boundaries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from localchat.reasoning import (
    CLOSE_TAG,
    OPEN_TAG,
    ReasoningDelta,
    ReasoningFormat,
    ReasoningSplitter,
    TextDelta,
    ThoughtControl,
    detect,
    split_reply,
    template_kwargs,
    thought_line,
)

# Text that may hold pieces of the tags and newlines, so split points land inside them.
_ALPHABET = st.sampled_from(["a", "b", " ", "\n", "<", ">", "/", "t", "h", "i", "n", "k", "é", "你", "🙂",
                             "</th", "<thi", "ink>", "\n\n"])
_text = st.lists(_ALPHABET, max_size=40).map("".join)


def _stream(text: str, cuts: list[int], in_thought: bool = False) -> tuple[list, ReasoningSplitter]:
    splitter = ReasoningSplitter(in_thought=in_thought)
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    events = []
    for a, b in zip(bounds, bounds[1:]):
        events += splitter.feed(text[a:b])
    return events + splitter.finish(), splitter


def _joined(events: list) -> tuple[str, str]:
    return ("".join(e.text for e in events if isinstance(e, ReasoningDelta)),
            "".join(e.text for e in events if isinstance(e, TextDelta)))


def _template_parse(content: str) -> tuple[str, str]:
    """How the Qwen3 template itself cuts a reply that carries its thought (its history branch)."""
    reasoning = content.split(CLOSE_TAG)[0].rstrip("\n").split(OPEN_TAG)[-1].lstrip("\n")
    return reasoning, content.split(CLOSE_TAG)[-1].lstrip("\n")


_thought = _text.map(lambda t: t.strip("\n")).filter(lambda t: CLOSE_TAG not in t and OPEN_TAG not in t)
_answer = _text.map(lambda t: t.lstrip("\n")).filter(lambda t: CLOSE_TAG not in t)


@settings(max_examples=300, deadline=None)
@given(_thought, _answer, st.lists(st.integers(0, 200), max_size=12))
def test_closed_thought_splits_as_the_template_parses_it(thought, answer, cuts):
    reply = f"{OPEN_TAG}\n{thought}\n{CLOSE_TAG}\n\n{answer}"
    events, splitter = _stream(reply, cuts)
    assert _joined(events) == (thought, answer) == _template_parse(reply)
    kinds = [type(e) for e in events]
    assert kinds == sorted(kinds, key=lambda k: k is TextDelta), "thought events all come before answer events"
    assert all(e.text for e in events), "no empty events"
    assert splitter.closed


@settings(max_examples=300, deadline=None)
@given(_thought, _answer, st.lists(st.integers(0, 200), max_size=12))
def test_pre_opened_thought_sees_only_the_closing_tag(thought, answer, cuts):
    reply = f"{thought}\n{CLOSE_TAG}\n\n{answer}"
    events, splitter = _stream(reply, cuts, in_thought=True)
    assert _joined(events) == (thought, answer)
    assert splitter.closed


@settings(max_examples=300, deadline=None)
@given(_thought, st.lists(st.integers(0, 200), max_size=12), st.booleans())
def test_a_thought_never_closed_is_all_thought(thought, cuts, pre_opened):
    reply = thought if pre_opened else f"{OPEN_TAG}\n{thought}"
    events, splitter = _stream(reply, cuts, in_thought=pre_opened)
    assert _joined(events) == (thought.rstrip("\n"), "")
    assert not splitter.closed and splitter.in_thought


@settings(max_examples=300, deadline=None)
@given(_text.filter(lambda t: not t.lstrip().startswith(OPEN_TAG[:2]) and t.strip()),
       st.lists(st.integers(0, 200), max_size=12))
def test_a_reply_that_opens_no_thought_passes_through_unchanged(reply, cuts):
    events, splitter = _stream(reply, cuts)
    assert _joined(events) == ("", reply)
    assert not splitter.closed


def test_tags_split_into_single_characters():
    reply = f"{OPEN_TAG}\nstep one\n\nstep two\n{CLOSE_TAG}\n\nThe answer."
    events, _ = _stream(reply, list(range(len(reply))))
    assert _joined(events) == ("step one\n\nstep two", "The answer.")
    # The thought streams before the tag closes it: no waiting for the whole thought.
    splitter = ReasoningSplitter()
    assert splitter.feed(f"{OPEN_TAG}\nfirst") == [ReasoningDelta("first")]
    assert splitter.feed(" words</th") == [ReasoningDelta(" words")]
    assert splitter.feed("ink>\n\nA") == [TextDelta("A")]


def test_a_partial_tag_at_the_end_is_text():
    assert split_reply("<thi") == ("", "<thi")
    assert split_reply("thinking </thi", in_thought=True) == ("thinking </thi", "")
    assert split_reply("  ") == ("", "")


def test_the_answer_state_passes_pieces_through_as_they_are():
    splitter = ReasoningSplitter()
    splitter.feed(f"{OPEN_TAG}x{CLOSE_TAG}")
    piece = "\n\n  text <think> later"
    assert splitter.feed(piece) == [TextDelta("  text <think> later")]
    assert splitter.feed(piece) == [TextDelta(piece)], "after the answer starts nothing is changed"


def test_detection_reads_the_template_and_the_vocabulary_not_the_name():
    qwen3_like = "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    assert detect(qwen3_like) == ReasoningFormat(switch="enable_thinking")
    assert detect("{{ messages }}", lambda t: t in (OPEN_TAG, CLOSE_TAG)) == ReasoningFormat(switch=None)
    assert detect("{{ messages }}", lambda t: t == OPEN_TAG) is None
    assert detect(None) is None
    assert detect("<|im_start|>{{ m.content }}", lambda t: False) is None


def test_the_generation_prompt_says_whether_the_reply_starts_in_a_thought():
    fmt = ReasoningFormat(switch="enable_thinking")
    assert fmt.opens_in_thought("<|im_start|>assistant\n<think>\n")
    assert not fmt.opens_in_thought("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not fmt.opens_in_thought("<|im_start|>assistant\n")
    assert not fmt.opens_in_thought("<|im_start|>user\nwhat is <think>?<|im_end|>\n<|im_start|>assistant\n")
    assert fmt.splitter("<|im_start|>assistant\n<think>\n").in_thought


def test_template_kwargs_use_only_the_models_own_switch():
    fmt = ReasoningFormat(switch="enable_thinking")
    assert template_kwargs(fmt, "off") == {"enable_thinking": False}
    assert template_kwargs(fmt, "on") == {"enable_thinking": True}
    assert template_kwargs(fmt, "default") == {}
    assert template_kwargs(ReasoningFormat(), "off") == {}
    assert template_kwargs(None, "on") == {}


OPEN, CLOSE, NL, NLNL = 1, 2, 10, 20
CLOSING = [NL, CLOSE, NLNL]


def _decode(control: ThoughtControl, model: list[int], limit: int = 50) -> list[int]:
    """What a decode loop makes of a model that would say `model` token by token."""
    out: list[int] = []
    sampled = iter(model)
    while len(out) < limit:
        token = control.forcing.pop(0) if control.forcing else next(sampled, None)
        if token is None:
            break
        control.saw(token)
        out.append(token)
    return out


def test_the_budget_closes_the_thought_and_the_answer_follows():
    model = [OPEN, *range(100, 120), CLOSE, NLNL, 7, 8]  # a 20-token thought, then the answer 7 8
    control = ThoughtControl(OPEN, CLOSE, CLOSING, budget=5)
    out = _decode(control, model)
    assert out[:5] == [OPEN, 100, 101, 102, 103] and out[5:8] == CLOSING
    assert control.closed and not control.in_thought and control.thought_tokens == 7  # the tag and NL too
    assert out[8:10] == [104, 105], "the model goes on from its own stream; what it says next is its answer"


def test_a_budget_of_zero_closes_a_pre_opened_thought_before_the_first_token():
    control = ThoughtControl(OPEN, CLOSE, CLOSING, in_thought=True, budget=0)
    assert _decode(control, [100, 101, CLOSE, 7])[:3] == CLOSING


def test_no_budget_lets_the_model_close_its_own_thought():
    model = [OPEN, 100, 101, CLOSE, NLNL, 7, 8]
    control = ThoughtControl(OPEN, CLOSE, CLOSING)
    assert _decode(control, model) == model
    assert control.thought_tokens == 4 and control.closed


def test_end_now_closes_at_the_next_token_and_only_inside_a_thought():
    control = ThoughtControl(OPEN, CLOSE, CLOSING)
    out = [control.saw(OPEN), control.saw(100), control.end_now()]
    assert out and control.forcing == [] and control.end_requested
    control.saw(101)
    assert control.forcing == CLOSING
    after = ThoughtControl(OPEN, CLOSE, CLOSING)
    for token in (OPEN, CLOSE, 7):
        after.saw(token)
    after.end_now()
    after.saw(8)
    assert after.forcing == [], "an answer is never cut by a late end-now"


def test_thought_line():
    assert thought_line(840, 12.4) == "Thought for 12 s · 840 tokens"
    assert thought_line(None, None) == "Thought"


def test_config_thinking_settings(tmp_path):
    from localchat.config import Config
    from localchat.errors import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text("thinking: off\nshow_thinking: true\nsampling: {reasoning_budget: 256}\n"
                    "models: {qwen3-8b: {thinking: on}}\n")
    cfg = Config.load_file(path)
    assert (cfg.thinking, cfg.show_thinking) == ("off", True)
    assert cfg.thinking_for("qwen3-8b") == "on" and cfg.thinking_for("other") == "off"
    assert cfg.sampling_for("qwen3-8b").reasoning_budget == 256
    cfg.save(tmp_path / "again.yaml")
    assert Config.load_file(tmp_path / "again.yaml").thinking_for("qwen3-8b") == "on"
    path.write_text("thinking: sometimes\n")
    try:
        Config.load_file(path)
    except ConfigError as e:
        assert "thinking must be one of default, on, off" in e.message
    else:
        raise AssertionError("a bad thinking value must be refused")
