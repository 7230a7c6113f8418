"""Property tests of the GGUF reader: any bytes, and any mutation of a valid file, either parse or are refused
with a GGUFError. Never another exception, never a hang, never a large allocation."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from localchat.errors import GGUFError
from localchat.gguf import GGUFInfo, parse_gguf_bytes
from tests.support.ggufmutate import (
    INTERESTING,
    OPS,
    apply,
    crafted_gguf_bytes,
    hang_guard,
    layout,
    peak_memory,
    tiny_gguf_bytes,
)

MEMORY_LIMIT = 16 << 20  # bytes; a valid parse of these small files needs well under 1 MB
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes, file_size: int | None = None) -> GGUFInfo | GGUFError:
    with hang_guard(), peak_memory() as peak:
        try:
            outcome: GGUFInfo | GGUFError = parse_gguf_bytes(data, "fuzz.gguf", file_size)
        except GGUFError as e:
            outcome = e
    assert peak[0] < MEMORY_LIMIT, f"parsing {len(data)} bytes allocated {peak[0]:,} bytes"
    if isinstance(outcome, GGUFError):
        assert outcome.message.startswith("fuzz.gguf ") and "internal error" not in outcome.message
        assert outcome.hint
    else:
        assert all(outcome.data_offset + t.offset + t.nbytes <= outcome.file_size for t in outcome.tensors)
    return outcome


@SETTINGS
@given(st.binary(max_size=2048))
@example(b"")
@example(b"GGUF")
@example(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
def test_any_bytes(data):
    check(data)


@SETTINGS
@given(st.binary(max_size=512))
def test_any_bytes_after_a_valid_header(data):
    check(b"GGUF\x03\x00\x00\x00" + data)


MUTATIONS = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 2**32), st.integers(0, 2**32)),
                     min_size=1, max_size=4)


@SETTINGS
@given(MUTATIONS)
def test_mutations_of_a_crafted_file(mutations):
    base = crafted_gguf_bytes()
    check(apply(base, layout(base), mutations))


@SETTINGS
@given(MUTATIONS)
def test_mutations_of_a_tiny_model_from_the_gguf_writer(mutations):
    base = tiny_gguf_bytes()
    check(apply(base, layout(base), mutations))


@SETTINGS
@given(st.data())
def test_interesting_values_in_every_structural_field(data):
    """One field at a time (a count, a length, a type, a dimension, an offset) set to an extreme value."""
    base = crafted_gguf_bytes()
    lay = layout(base)
    field = data.draw(st.integers(0, len(lay.fields) - 1))
    value = data.draw(st.integers(0, len(INTERESTING) - 1))
    check(apply(base, lay, [("field", field, value)]))


def test_every_field_with_every_interesting_value():
    """Exhaustively, on the crafted file: each structural field x each extreme value (~3,500 files)."""
    base = crafted_gguf_bytes()
    lay = layout(base)
    outcomes = {"parsed": 0, "refused": 0}
    for field in range(len(lay.fields)):
        for value in range(len(INTERESTING)):
            outcome = check(apply(base, lay, [("field", field, value)]))
            outcomes["refused" if isinstance(outcome, GGUFError) else "parsed"] += 1
    assert outcomes["refused"] > outcomes["parsed"] > 0


def test_header_only_buffers_of_a_large_file_are_checked_too():
    """The fuzz target for real headers: the bytes up to the data, claiming the real file's size."""
    base = tiny_gguf_bytes()
    lay = layout(base)
    head = base[:lay.data_start]
    assert isinstance(check(head, file_size=len(base)), GGUFInfo)
    for field in range(0, len(lay.fields), 3):
        check(apply(head, lay, [("field", field, 31)]), file_size=len(base))
