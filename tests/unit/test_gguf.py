"""The GGUF reader on valid files: real models, files from the gguf package's writer, crafted files."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from localchat.errors import GGUFError
from localchat.gguf import GGML_TYPES, GGUFArray, check_split, parse_gguf_bytes, read_gguf
from tests.support import ggufcraft as gc
from tests.support.ggufgen import CHATML_TEMPLATE, make_tiny_gguf


def _reference(path: Path):
    """What the gguf package's own (unbounded, slow) reader makes of the file."""
    import gguf

    return gguf.GGUFReader(str(path))


def _assert_matches_reference(path: Path) -> None:
    import gguf

    info, ref = read_gguf(path), _reference(path)
    assert [t.name for t in info.tensors] == [t.name for t in ref.tensors]
    for mine, theirs in zip(info.tensors, ref.tensors):
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.ggml_type == int(theirs.tensor_type)
        assert info.data_offset + mine.offset == theirs.data_offset
        assert mine.nbytes == theirs.n_bytes
    assert info.data_offset == ref.data_offset
    fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(info.metadata) == list(fields)
    for key, f in fields.items():
        value = info.metadata[key]
        if f.types[:2] == [gguf.GGUFValueType.ARRAY] * 2:
            assert isinstance(value, list) and all(isinstance(v, list) for v in value), key  # nested
        elif f.types[0] == gguf.GGUFValueType.ARRAY:
            assert len(value) == len(f.data), key
            if isinstance(value, list) and f.types[-1] != gguf.GGUFValueType.ARRAY:
                assert value == pytest.approx(f.contents()), key
            else:
                assert isinstance(value, (GGUFArray, list)), key
        else:
            assert value == pytest.approx(f.contents()), key


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", reply="Hi!", n_embd=32)


def test_tiny_generated_model(tiny):
    info = read_gguf(tiny)
    assert (info.version, info.architecture, info.name) == (3, "llama", "tiny-test")
    assert (info.context_length, info.block_count, info.file_type) == (2048, 2, 0)
    assert info.chat_template == CHATML_TEMPLATE
    assert (info.bos_token, info.eos_token) == ("<|endoftext|>", "<|im_end|>")
    assert (info.split_count, info.split_index, info.alignment) == (1, 0, 32)
    assert info.file_size == tiny.stat().st_size
    n_vocab = len(info.metadata["tokenizer.ggml.tokens"])
    assert info.tensors[0].name == "token_embd.weight" and info.tensors[0].shape == (32, n_vocab)
    assert info.metadata["tokenizer.ggml.tokens"][:3] == ["Ā", "ā", "Ă"]  # a small vocabulary: kept as a list
    _assert_matches_reference(tiny)


def test_writer_file_with_every_value_type_and_quantized_tensors(tmp_path):
    import gguf

    path = tmp_path / "all.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_uint8("t.u8", 255); w.add_int8("t.i8", -128); w.add_uint16("t.u16", 65535); w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 2**32 - 1); w.add_int32("t.i32", -(2**31)); w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63)); w.add_float32("t.f32", 0.25); w.add_float64("t.f64", -1e300)
    w.add_bool("t.bool", True); w.add_string("t.str", "héllo 你好 🙂")
    w.add_array("t.small", [1, 2, 3]); w.add_array("t.strs", ["a", "", "ü"])
    w.add_array("t.nested", [[1, 2], [3, 4]])
    w.add_array("t.big_ints", list(range(5000))); w.add_array("t.big_strs", [f"tok{i}" for i in range(3000)])
    w.add_context_length(1024)
    w.add_tensor("f32", np.ones((4, 64), dtype=np.float32))
    w.add_tensor("f16", np.ones((64,), dtype=np.float16))
    w.add_tensor("q8", np.zeros((2, 34 * 2), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q4k", np.zeros((3, 144), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

    info = read_gguf(path)
    md = info.metadata
    assert (md["t.u8"], md["t.i8"], md["t.u16"], md["t.i16"]) == (255, -128, 65535, -32768)
    assert (md["t.u32"], md["t.i32"], md["t.u64"], md["t.i64"]) == (2**32 - 1, -(2**31), 2**64 - 1, -(2**63))
    assert (md["t.f32"], md["t.f64"], md["t.bool"]) == (0.25, -1e300, True)
    assert md["t.str"] == "héllo 你好 🙂"
    assert md["t.small"] == [1, 2, 3] and md["t.strs"] == ["a", "", "ü"] and md["t.nested"] == [[1, 2], [3, 4]]
    assert md["t.big_ints"] == GGUFArray(element_type=5, length=5000)  # large arrays: a summary only
    assert md["t.big_strs"] == GGUFArray(element_type=8, length=3000) and len(md["t.big_strs"]) == 3000
    assert info.architecture == "qwen2" and info.context_length == 1024 and info.chat_template is None
    assert {t.name: (t.type_name, t.nbytes) for t in info.tensors} == {
        "f32": ("F32", 1024), "f16": ("F16", 128), "q8": ("Q8_0", 136), "q4k": ("Q4_K", 432)}
    _assert_matches_reference(path)


def test_real_smollm2(smollm2_path):
    info = read_gguf(smollm2_path)
    assert (info.architecture, info.context_length, info.block_count) == ("llama", 8192, 30)
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert info.metadata["tokenizer.ggml.tokens"] == GGUFArray(8, 49152)
    assert "<|im_start|>" in info.chat_template and len(info.tensors) == 272
    assert info.file_type == 3  # MOSTLY_Q4_1
    _assert_matches_reference(smollm2_path)


def test_real_qwen_coder(qwen_coder_path):
    info = read_gguf(qwen_coder_path)
    assert (info.architecture, info.context_length, info.block_count) == ("qwen2", 32768, 24)
    assert (info.bos_token, info.eos_token) == ("<|endoftext|>", "<|im_end|>")  # ids 151643, 151645
    assert len(info.metadata["tokenizer.ggml.tokens"]) == 151936
    assert info.name == "Qwen2.5 Coder 0.5B Instruct AWQ" and info.file_type == 15  # MOSTLY_Q4_K_M
    assert {GGML_TYPES[t.ggml_type][0] for t in info.tensors} == {"F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"}
    # The writer packs tensors back to back (padded to the alignment) up to the end of the file: so every
    # size the reader computed from shape and ggml type, for all five types, is exact.
    packed = sorted(info.tensors, key=lambda t: t.offset)
    for a, b in zip(packed, packed[1:]):
        assert b.offset == -(-(a.offset + a.nbytes) // info.alignment) * info.alignment, (a, b)
    assert info.data_offset + packed[-1].offset + packed[-1].nbytes == info.file_size


def test_real_qwen_coder_vocabulary_is_checked_not_kept(qwen_coder_path):
    """Not a timing assertion: the reader's work must not grow with a Python object per token. Reading
    the 151k-token vocabulary must allocate far less than a list of 151k strings would."""
    import tracemalloc

    read_gguf(qwen_coder_path)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        read_gguf(qwen_coder_path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"read_gguf(qwen2.5-coder-0.5b) under tracemalloc: {elapsed * 1000:.0f} ms, peak {peak / 1e6:.1f} MB")
    # The metadata region is ~6 MB and is read once (a few MB of slack for the read-ahead buffer).
    assert peak < 24e6


def test_crafted_file_layout_and_values():
    data, layout = gc.valid_craft().build()
    info = parse_gguf_bytes(data, "craft.gguf")
    assert info.data_offset == layout["data"] and info.file_size == len(data)
    assert [(t.name, t.offset, t.nbytes) for t in info.tensors] == [
        ("token_embd.weight", 0, 170), ("output_norm.weight", 192, 128), ("output.weight", 320, 320)]
    assert info.metadata["test.nested"] == [[1, 2], [3]] and info.metadata["general.name"] == "craft ✓"
    assert (info.bos_token, info.eos_token) == ("<s>", "</s>")


def test_large_token_array_lookups_through_checkpoints():
    """bos/eos ids that index a large (summarised) token array are resolved exactly, at any position."""
    tokens = [f"t{i}" for i in range(3000)]
    for bos, eos in ((0, 2999), (255, 256), (1024, 2047)):
        c = gc.GGUFCraft().add("general.architecture", gc.STR, "llama")
        c.add("tokenizer.ggml.tokens", gc.ARR, (gc.STR, tokens))
        c.add("tokenizer.ggml.bos_token_id", gc.U32, bos).add("tokenizer.ggml.eos_token_id", gc.U32, eos)
        info = parse_gguf_bytes(c.build()[0])
        assert (info.bos_token, info.eos_token) == (f"t{bos}", f"t{eos}")
    c = gc.GGUFCraft().add("general.architecture", gc.STR, "llama")
    c.add("tokenizer.ggml.tokens", gc.ARR, (gc.STR, tokens)).add("tokenizer.ggml.eos_token_id", gc.U32, 3000)
    assert parse_gguf_bytes(c.build()[0]).eos_token is None  # out of range: unknown, not an error


def test_header_only_buffer_with_the_real_file_size():
    data, layout = gc.valid_craft().build()
    info = parse_gguf_bytes(data[:layout["data"]], "craft.gguf", file_size=len(data))
    assert len(info.tensors) == 3
    with pytest.raises(GGUFError, match="truncated"):
        parse_gguf_bytes(data[:layout["data"]], "craft.gguf")


def test_truncated_file_message_names_file_tensor_and_sizes(tmp_path):
    src = make_tiny_gguf(tmp_path / "full.gguf", reply="Hi!", n_embd=16)
    cut = tmp_path / "model.gguf"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(GGUFError) as e:
        read_gguf(cut)
    message = str(e.value)
    assert message.startswith("model.gguf is truncated: tensor 'blk.1.ffn_down.weight' ends at byte ")
    assert f"but the file has {len(data) - 100:,} bytes" in message
    assert e.value.hint == "download it again"


def test_files_that_are_not_there_or_not_files(tmp_path):
    with pytest.raises(GGUFError, match="cannot open .*missing.gguf"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match="is not a regular file|cannot open"):
        read_gguf(tmp_path)
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(GGUFError, match="empty.gguf is empty"):
        read_gguf(tmp_path / "empty.gguf")
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(GGUFError, match="is not a GGUF file"):
        read_gguf(tmp_path / "model.safetensors")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    with pytest.raises(GGUFError, match="is not a regular file"):
        read_gguf(fifo)


def test_metadata_beyond_the_first_read_is_fetched(tmp_path, monkeypatch):
    """Metadata larger than the first read (8 MiB in production) is read on demand, not refused."""
    import localchat.gguf as reader

    monkeypatch.setattr(reader, "_FIRST_READ", 64)
    path = tmp_path / "craft.gguf"
    path.write_bytes(gc.valid_craft().build()[0])
    assert len(read_gguf(path).tensors) == 3


# -- split models

def _write_split(tmp_path: Path, parts: int = 3) -> list[Path]:
    import gguf

    base = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(str(base), "llama", split_max_tensors=2)
    w.add_context_length(128)
    for i in range(2 * parts):
        w.add_tensor(f"t{i}", np.full((8,), i, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    paths = sorted(tmp_path.glob("model-*-of-*.gguf"))
    assert len(paths) == parts
    return paths


def test_split_model_from_the_gguf_writer(tmp_path):
    paths = _write_split(tmp_path)
    infos = check_split(list(reversed(paths)))
    assert [i.path for i in infos] == paths
    assert [(i.split_index, i.split_count) for i in infos] == [(0, 3), (1, 3), (2, 3)]
    assert infos[0].architecture == "llama" and infos[1].architecture == ""  # later parts: tensors only
    assert [t.name for i in infos for t in i.tensors] == [f"t{i}" for i in range(6)]


def test_unsplit_file_is_a_one_part_split(tiny):
    (info,) = check_split([tiny])
    assert info.split_count == 1


def test_split_errors(tmp_path):
    paths = _write_split(tmp_path)
    with pytest.raises(GGUFError, match=r"has 3 parts but 2 were given; part\(s\) 2 missing"):
        check_split([paths[0], paths[2]])
    with pytest.raises(GGUFError, match="are both part 2 of 3"):
        check_split([paths[0], paths[1], paths[1]])
    with pytest.raises(GGUFError, match="no GGUF files given"):
        check_split([])
    (tmp_path / "two").mkdir()
    other = _write_split(tmp_path / "two", 2)
    with pytest.raises(GGUFError, match="disagree on how many parts"):
        check_split([paths[0], other[1], paths[2]])


def test_split_parts_with_the_same_tensor_or_a_wrong_total(tmp_path):
    def part(index: int, count: int, names: list[str], total: int | None = None) -> Path:
        c = gc.GGUFCraft().add("split.no", gc.U16, index).add("split.count", gc.U16, count)
        if index == 0:
            c.add("general.architecture", gc.STR, "llama")
        if total is not None:
            c.add("split.tensors.count", gc.I32, total)
        for name in names:
            c.tensor(name, (8,))
        path = tmp_path / f"m-{index + 1:05d}-of-{count:05d}.gguf"
        path.write_bytes(c.build()[0])
        return path

    with pytest.raises(GGUFError, match="tensor 'a' is in both"):
        check_split([part(0, 2, ["a"], 2), part(1, 2, ["a"])])
    with pytest.raises(GGUFError, match="says the model has 5 tensors but its 2 parts hold 2"):
        check_split([part(0, 2, ["a"], 5), part(1, 2, ["b"])])
    assert len(check_split([part(0, 2, ["a"], 2), part(1, 2, ["b"])])) == 2


def test_reader_does_not_import_gguf_package():
    """The reader is ours, stdlib only: the gguf package is a test dependency, not a runtime one."""
    import subprocess

    code = "import sys, localchat.gguf; print('gguf' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
