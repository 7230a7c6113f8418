"""A corpus of hand-made hostile and broken GGUF files, each refused with a message that names the problem.

Every case is written to disk and read through read_gguf, the path a real file takes. These are the
shapes of the llama.cpp GGUF parser CVEs (huge counts and lengths, offsets and sizes pointing outside the
file, unknown types, too many dimensions) plus plain damage (truncation, bad magic, old versions).
"""

from __future__ import annotations

import struct

import pytest

from localchat.errors import GGUFError
from localchat.gguf import MAX_ARRAY_LENGTH, MAX_KV, MAX_TENSORS, read_gguf
from tests.support import ggufcraft as gc
from tests.support.ggufcraft import ARR, BOOL, F32, I32, STR, U8, U16, U32, U64, GGUFCraft, valid_craft
from tests.support.ggufmutate import hang_guard

U64_MAX = 2**64 - 1


def minimal() -> GGUFCraft:
    return GGUFCraft().add("general.architecture", STR, "llama")


def with_tensors(*tensors: tuple) -> bytes:
    c = minimal()
    for t in tensors:
        c.tensor(*t)
    return c.build()[0]


def raw_tensor(name: bytes, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    return gc.string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ggml_type, offset)


def override_tensor(info: bytes, shape=(32,)) -> bytes:
    return minimal().tensor("t", shape).build(tensor_info_override={0: info})[0]


def patch(data: bytes, at: int, raw: bytes) -> bytes:
    return data[:at] + raw + data[at + len(raw):]


VALID = valid_craft().build()[0]

CASES = {
    # header
    "bad magic": (b"GGML" + VALID[4:], "is not a GGUF file (it starts with b'GGML'"),
    "zip file": (b"PK\x03\x04" + b"\0" * 60, "is not a GGUF file"),
    "version 1": (patch(VALID, 4, struct.pack("<I", 1)), "uses GGUF version 1"),
    "version 99": (patch(VALID, 4, struct.pack("<I", 99)), "has unknown GGUF version 99"),
    "version 0": (patch(VALID, 4, struct.pack("<I", 0)), "has unknown GGUF version 0"),
    "big-endian": (patch(VALID, 4, struct.pack(">I", 3)), "is a big-endian GGUF"),
    "header cut": (VALID[:20], "is truncated: the GGUF header ends at byte 24"),
    # counts
    "tensor count 2^64-1": (patch(VALID, 8, struct.pack("<Q", U64_MAX)), f"more than the {MAX_TENSORS:,} allowed"),
    "tensor count just over max": (patch(VALID, 8, struct.pack("<Q", MAX_TENSORS + 1)), "tensors, more than"),
    "kv count 2^64-1": (patch(VALID, 16, struct.pack("<Q", U64_MAX)), f"more than the {MAX_KV:,} allowed"),
    "counts beyond the file size": (patch(VALID, 8, struct.pack("<QQ", 1000, 1000)),
                                    "is truncated: its 1,000 tensors and 1,000 metadata entries need at least"),
    "kv count one too many": (patch(VALID, 16, struct.pack("<Q", 24)), "tensor"),  # the tensor table reads as kv
    # strings
    "key length 2^64-1": (GGUFCraft().add_raw(b"", b"").build()[0][:24] + struct.pack("<Q", U64_MAX) + b"k" * 20,
                          "metadata key #0 claims 18,446,744,073,709,551,615 bytes, more than the whole file"),
    "key longer than 65535": (GGUFCraft().add("k" * 70000, U8, 1).build()[0], "is 70,000 bytes long, more than the 65,535"),
    "key not utf-8": (GGUFCraft().add(b"gen\xffral", U8, 1).build()[0], "metadata key #0 is not valid UTF-8"),
    "empty key": (GGUFCraft().add(b"", U8, 1).build()[0], "metadata key #0 is empty"),
    "string value past EOF": (minimal().add_raw("general.name", struct.pack("<IQ", STR, 10**6) + b"abc").build()[0],
                              "the value of 'general.name' claims 1,000,000 bytes, more than the whole file"),
    "string value over 16 MiB": (minimal().add_raw("x", struct.pack("<IQ", STR, 17 << 20)).build()[0],
                                 "more than the whole file"),
    # value and array types
    "unknown value type": (minimal().add_raw("x", struct.pack("<I", 13) + b"\0" * 8).build()[0],
                           "metadata 'x' has unknown value type 13"),
    "value type 2^32-1": (minimal().add_raw("x", struct.pack("<I", 2**32 - 1)).build()[0], "unknown value type"),
    "unknown array element type": (minimal().add_raw("x", struct.pack("<IIQ", ARR, 99, 1)).build()[0],
                                   "the array 'x' has unknown element type 99"),
    "array length 2^64-1": (minimal().add_raw("x", struct.pack("<IIQ", ARR, U8, U64_MAX)).build()[0],
                            f"claims 18,446,744,073,709,551,615 elements, more than the {MAX_ARRAY_LENGTH:,}"),
    "numeric array past EOF": (minimal().add_raw("x", struct.pack("<IIQ", ARR, U64, 1 << 20)).build()[0],
                               "the array 'x' claims 8,388,608 bytes, more than the whole file"),
    "string array element past EOF": (minimal().add_raw("x", struct.pack("<IIQ", ARR, STR, 2) + gc.string("a")
                                                         + struct.pack("<Q", 2**62)).build()[0],
                                      "element 1 of the array 'x' claims"),
    "large string array element past EOF": (
        minimal().add_raw("x", struct.pack("<IIQ", ARR, STR, 5000) + gc.string("a") * 4999
                          + struct.pack("<Q", 2**63 + 5)).build()[0], "the array 'x' (around element 4,864)"),
    "large string array cut short": (
        minimal().add_raw("x", struct.pack("<IIQ", ARR, STR, 5000) + gc.string("a") * 4000).build()[0],
        "is truncated: the array 'x' (around element 3,840) ends at byte"),
    "arrays nested too deep": (minimal().add_raw("x", struct.pack("<IIQIQIQ", ARR, ARR, 1, ARR, 1, ARR, 1)).build()[0],
                               "nests arrays more than 3 deep"),
    "a million nested arrays": (minimal().add_raw("x", struct.pack("<IIQ", ARR, ARR, 10**6)).build()[0],
                                "the array 'x' of 1,000,000 arrays claims 12,000,000 bytes, more than the whole file"),
    "duplicate key": (minimal().add("general.name", STR, "a").add("general.name", STR, "b").build()[0],
                      "metadata key 'general.name' appears twice"),
    # keys llama.cpp trusts
    "alignment zero": (minimal().add("general.alignment", U32, 0).build()[0], "general.alignment is 0, not a power of two"),
    "alignment 3": (minimal().add("general.alignment", U32, 3).build()[0], "general.alignment is 3"),
    "alignment 2^31": (minimal().add("general.alignment", U32, 2**31).build()[0], "not a power of two up to 1,048,576"),
    "alignment as u64": (minimal().add("general.alignment", U64, 32).build()[0], "general.alignment must be a uint32"),
    "no architecture": (GGUFCraft().add("general.name", STR, "x").build()[0], "has no general.architecture"),
    "architecture as a number": (GGUFCraft().add("general.architecture", U32, 7).build()[0],
                                 "general.architecture must be a string"),
    "tokens not strings": (minimal().add("tokenizer.ggml.tokens", ARR, (I32, [1, 2])).build()[0],
                           "tokenizer.ggml.tokens must be an array of strings"),
    "token types shorter than the vocabulary": (
        minimal().add("tokenizer.ggml.tokens", ARR, (STR, ["a", "b", "c"]))
        .add("tokenizer.ggml.token_type", ARR, (I32, [1])).build()[0],
        "tokenizer.ggml.token_type has 1 entries but the vocabulary has 3 tokens"),
    "token types as bytes": (
        minimal().add("tokenizer.ggml.tokens", ARR, (STR, ["a"])).add("tokenizer.ggml.token_type", ARR, (U8, [1])).build()[0],
        "tokenizer.ggml.token_type must be an array of int32"),
    "scores without tokens": (minimal().add("tokenizer.ggml.scores", ARR, (F32, [0.5])).build()[0],
                              "tokenizer.ggml.scores has 1 entries but the vocabulary has 0 tokens"),
    "split index past count": (minimal().add("split.no", U16, 3).add("split.count", U16, 3).build()[0],
                               "its split.no is 3 but its split.count is 3"),
    "split count as bool": (minimal().add("split.count", BOOL, True).build()[0], "split.count must be an integer"),
    # tensors
    "tensor name 64 bytes": (override_tensor(raw_tensor(b"n" * 64, [32])), "is 64 bytes long, more than the 63 allowed"),
    "tensor name not utf-8": (override_tensor(raw_tensor(b"w\xc3", [32])), "the name of tensor #0 is not valid UTF-8"),
    "empty tensor name": (override_tensor(raw_tensor(b"", [32])), "tensor #0 has an empty name"),
    "n_dims 5": (override_tensor(raw_tensor(b"t", [1, 1, 1, 1, 1])), "tensor 't' has 5 dimensions; ggml allows at most 4"),
    "n_dims 2^32-1": (override_tensor(gc.string("t") + struct.pack("<I", 2**32 - 1)), "has 4,294,967,295 dimensions"),
    "zero dimension": (with_tensors(("t", (32, 0))), "tensor 't' has an impossible shape [32, 0]"),
    "dimension over int64": (override_tensor(raw_tensor(b"t", [2**63])), "has an impossible shape"),
    "dims overflow int64": (override_tensor(raw_tensor(b"t", [2**32, 2**32])), "whose element count overflows 64 bits"),
    "unknown ggml type": (override_tensor(raw_tensor(b"t", [32], ggml_type=4)), "has tensor 't' of unknown ggml type 4"),
    "ggml type 2^32-1": (override_tensor(raw_tensor(b"t", [32], ggml_type=2**32 - 1)), "unknown ggml type 4294967295"),
    "row not a multiple of the block": (override_tensor(raw_tensor(b"t", [33], ggml_type=8)),
                                        "has a row of 33 elements, not a multiple of Q8_0's block of 32"),
    "duplicate tensor name": (with_tensors(("t", (32,)), ("t", (32,))), "two tensors are named 't'"),
    "unaligned tensor offset": (with_tensors(("a", (32,)), ("b", (32,), 0, 136)),
                                "tensor 'b' starts at data offset 136, not a multiple of the alignment (32)"),
    "overlapping tensors": (with_tensors(("a", (64,)), ("b", (32,), 0, 128)),
                            "the data of tensors 'a' and 'b' overlap"),
    "same offset": (with_tensors(("a", (32,)), ("b", (32,), 0, 0)), "overlap"),
    "offset 2^63": (override_tensor(raw_tensor(b"t", [32], offset=2**63)), "claims bytes"),
    "offset past EOF": (override_tensor(raw_tensor(b"t", [32], offset=1 << 20)), "past the end of the file"),
    "huge tensor": (override_tensor(raw_tensor(b"t", [1 << 44])), "past the end of the file"),
    "tensor of a terabyte": (override_tensor(raw_tensor(b"t", [1 << 38])), "is truncated: tensor 't' ends at byte"),
    "tensor data missing": (minimal().tensor("t", (32,)).build(data=False)[0], "is truncated: tensor 't' ends at byte"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case_is_refused_with_a_clear_message(name, tmp_path):
    data, expected = CASES[name]
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    with hang_guard(), pytest.raises(GGUFError) as e:
        read_gguf(path)
    assert e.value.message.startswith("model.gguf "), e.value.message
    assert expected in e.value.message, e.value.message
    assert e.value.hint and "internal error" not in e.value.message


def test_the_corpus_starts_from_a_valid_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(VALID)
    info = read_gguf(path)
    assert info.architecture == "llama" and len(info.tensors) == 3


def test_truncated_at_every_byte_and_every_section_boundary(tmp_path):
    """Cut anywhere (each of the 1,760 prefixes; every section boundary among them): refused, never parsed."""
    data, lay = valid_craft().build()
    boundaries = {lay["header"], *lay["kv"], *lay["tensors"], lay["data"]}
    path = tmp_path / "model.gguf"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(GGUFError) as e:
            read_gguf(path)
        message = e.value.message
        assert any(w in message for w in ("is truncated", "is empty", "is not a GGUF file")), (cut, message)
        if cut in boundaries:
            assert "is truncated" in message, (cut, message)
    assert len(boundaries) == 1 + len(lay["kv"]) + len(lay["tensors"]) + 1


def test_duplicate_key_in_a_real_writer_file(tmp_path):
    """Insert a copy of a real metadata entry (and fix up the count) in a file from the gguf package."""
    from tests.support.ggufmutate import apply, layout, tiny_gguf_bytes

    base = tiny_gguf_bytes()
    lay = layout(base)
    path = tmp_path / "model.gguf"
    path.write_bytes(apply(base, lay, [("duplicate", 1, 1)]))
    with pytest.raises(GGUFError, match="appears twice"):
        read_gguf(path)


def test_nested_array_bomb_is_checked_but_not_kept(tmp_path):
    """200 x 200 x 200 small arrays: every element bound-checked, but not 8 million Python values kept."""
    from tests.support.ggufmutate import peak_memory

    inner = struct.pack("<IQ", U8, 200) + bytes(200)
    middle = struct.pack("<IQ", ARR, 200) + inner * 200
    path = tmp_path / "bomb.gguf"
    path.write_bytes(minimal().add_raw("bomb", struct.pack("<IIQ", ARR, ARR, 200) + middle * 200).build()[0])
    with hang_guard(), peak_memory() as peak:
        info = read_gguf(path)
    size = path.stat().st_size
    assert peak[0] < size + (16 << 20), f"{peak[0]:,} bytes for a {size:,}-byte file"
    bomb = info.metadata["bomb"]
    assert len(bomb) == 200 and sum(isinstance(m, list) for m in bomb) < 200  # the kept-value budget ran out
