"""One contract, two engines: every test here runs against the local engine (a worker process on the tiny
generated models) and the remote engine (RemoteEngineClient against a real `localchat serve` of the same
models). Whatever ChatSession, the workspace, the CLI and the server rely on is asserted here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from localchat.engine.api import Engine, Generation, TextDelta
from localchat.engine.client import EngineClient
from localchat.engine.remote import RemoteEngineClient
from localchat.errors import ContextOverflowError
from localchat.types import LoadOptions, SamplingParams
from tests.support.ggufgen import CHAT_PROMPT, TINY_REPLY
from tests.support.models import register_local_model
from tests.support.server import start_server

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)
ENDLESS = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=1500)  # the loop model never stops

MakeEngine = Callable[[str], Engine]  # "tiny" (answers TINY_REPLY) or "loop" (abcdefgh abcdefgh ...)

if TYPE_CHECKING:  # mypy checks that both clients and their generations conform to the protocols
    def _conforms(local: EngineClient, remote: RemoteEngineClient) -> tuple[Engine, Engine, Generation, Generation]:
        return local, remote, local.generate("", GREEDY), remote.generate("", GREEDY)


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, tiny_model: Path, tiny_loop_model: Path) -> Iterator[str]:
    """A `localchat serve` holding both tiny models (one worker each), shared by this module's tests."""
    home = tmp_path_factory.mktemp("contract") / "home"
    register_local_model(home, tiny_model, "tiny")
    register_local_model(home, tiny_loop_model, "loop")
    server = start_server(home, "--model", "tiny", "--max-models", "2")
    try:
        yield server.v1
    finally:
        server.stop()


@pytest.fixture(params=["local", "remote"])
def make_engine(request, tmp_path, tiny_model: Path, tiny_loop_model: Path) -> Iterator[MakeEngine]:
    engines: list[Engine] = []

    def make(model: str) -> Engine:
        engine: Engine
        if request.param == "local":
            path = tiny_model if model == "tiny" else tiny_loop_model
            engine = EngineClient.start(path, LoadOptions(n_ctx=2048), tmp_path / "logs")
        else:
            engine = RemoteEngineClient.start(request.getfixturevalue("remote_server"), model)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def test_engine_and_generation_satisfy_the_protocols(make_engine: MakeEngine) -> None:
    engine = make_engine("tiny")
    assert isinstance(engine, Engine)
    generation = engine.generate(CHAT_PROMPT, GREEDY)
    assert isinstance(generation, Generation)
    assert isinstance(generation.id, str) and generation.id
    list(generation)


def test_generate_yields_text_deltas_that_make_up_the_text(make_engine: MakeEngine) -> None:
    engine = make_engine("tiny")
    generation = engine.generate(CHAT_PROMPT, GREEDY)
    assert generation.usage is None and generation.finish_reason is None  # set at the end, not before
    events = list(generation)
    assert events and all(type(e) is TextDelta for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == generation.text == TINY_REPLY
    assert generation.finish_reason == "stop"
    assert generation.usage is not None and generation.usage.completion_tokens > 0
    assert generation.usage.prompt_tokens > 0


def test_max_tokens_ends_with_length(make_engine: MakeEngine) -> None:
    engine = make_engine("loop")
    generation = engine.generate(CHAT_PROMPT, SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=3))
    list(generation)
    assert generation.text == "abc" and generation.finish_reason == "length"


def test_cancel_ends_with_cancelled_and_the_engine_goes_on(make_engine: MakeEngine) -> None:
    engine = make_engine("loop")
    generation = engine.generate(CHAT_PROMPT, ENDLESS)
    first = next(iter(generation))
    assert isinstance(first, TextDelta) and first.text
    generation.cancel()
    rest = list(generation)  # ends normally, without an error
    generation.cancel()  # idempotent, also after the end
    assert generation.finish_reason == "cancelled"
    assert generation.usage is not None
    assert generation.text == first.text + "".join(e.text for e in rest if isinstance(e, TextDelta))
    assert len(generation.text) < 1500
    again = engine.generate(CHAT_PROMPT, SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=3))
    list(again)
    assert again.text == "abc" and again.finish_reason == "length"


def test_a_generation_left_by_its_with_block_is_cancelled(make_engine: MakeEngine) -> None:
    engine = make_engine("loop")
    with engine.generate(CHAT_PROMPT, ENDLESS) as generation:
        next(iter(generation))
    list(generation)
    assert generation.finish_reason == "cancelled"


def test_count_tokens_returns_one_int_per_text(make_engine: MakeEngine) -> None:
    engine = make_engine("tiny")
    counts = engine.count_tokens([CHAT_PROMPT, "abc"])
    assert len(counts) == 2 and all(type(n) is int and n > 0 for n in counts)
    assert counts[0] > counts[1]
    assert engine.count_tokens([]) == []


def test_embed_returns_one_normalised_vector_per_text(make_engine: MakeEngine) -> None:
    engine = make_engine("tiny")
    result = engine.embed(["hello", "hello there", "bye"])
    assert len(result.vectors) == 3 and len({len(v) for v in result.vectors}) == 1
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-6 for v in result.vectors)
    assert result.prompt_tokens > 3
    assert engine.embed(["hello"]).vectors[0] == pytest.approx(result.vectors[0], abs=1e-6)  # alone or in a batch


def test_embed_of_a_text_longer_than_the_window_is_a_context_overflow(make_engine: MakeEngine) -> None:
    engine = make_engine("tiny")
    with pytest.raises(ContextOverflowError, match=r"input\[1\] is \d+ tokens"):
        engine.embed(["short", "x " * 3000])
    assert len(engine.embed(["short"]).vectors) == 1


def test_close_is_idempotent_and_alive_flips(make_engine: MakeEngine) -> None:
    engine = make_engine("tiny")
    assert engine.alive
    engine.close()
    assert not engine.alive
    engine.close()
    assert not engine.alive


def test_the_with_block_closes_the_engine(make_engine: MakeEngine) -> None:
    engine = make_engine("tiny")
    with engine as entered:
        assert entered is engine
        list(engine.generate(CHAT_PROMPT, GREEDY))
    assert not engine.alive
