"""Catalog entries for remote engines (an OpenAI-compatible server elsewhere)."""

from pathlib import Path

import pytest

from localchat.catalog import load_file
from localchat.errors import CatalogError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_remote_entry_needs_no_files_or_sources(tmp_path):
    path = write(tmp_path, "- id: cluster\n  name: Qwen 72B on the cluster\n  endpoint: https://gpu.internal/v1\n"
                           "  remote_model: Qwen/Qwen2.5-72B-Instruct\n  api_key_env: VLLM_API_KEY\n  context: 32768\n")
    (entry,) = load_file(path, origin="user")
    assert entry.is_remote and entry.files == () and entry.sources == ()
    assert (entry.endpoint, entry.remote_model, entry.api_key_env, entry.context) == (
        "https://gpu.internal/v1", "Qwen/Qwen2.5-72B-Instruct", "VLLM_API_KEY", 32768)


def test_remote_model_defaults_to_nothing_so_the_id_is_used(tmp_path):
    (entry,) = load_file(write(tmp_path, "- id: llama-server\n  endpoint: http://10.0.0.5:8080/v1\n"), origin="user")
    assert entry.remote_model is None and entry.is_remote


@pytest.mark.parametrize("text, line, words", [
    ("- id: a\n  endpoint: ftp://host/v1\n", 2, "http:// or https://"),
    ("- id: a\n  endpoint: https:///v1\n", 2, "http:// or https://"),
    ("- id: a\n  endpoint: https://host:99999/v1\n", 2, "not a valid URL"),
    ("- id: a\n  endpoint: https://user:pw@host/v1\n", 2, "must not carry credentials"),
    ("- id: a\n  endpoint: https://host/v1?key=abc\n", 2, "without ?query"),
    ("- id: a\n  endpoint: https://host/v1\n  files: [a.gguf]\n", 3, "'files' does not apply to a remote engine"),
    ("- id: a\n  endpoint: https://host/v1\n  sources:\n    - hf: a/b\n", 4, "'sources' does not apply"),
    ("- id: a\n  endpoint: https://host/v1\n  template: chatml\n", 3, "applies its own chat template"),
    ("- id: a\n  endpoint: https://host/v1\n  api_key_env: sk-abc123\n", 3, "not an environment variable name"),
    ("- id: a\n  endpoint: https://host/v1\n  remote_model: ''\n", 3, "remote_model"),
    ("- id: a\n  endpoint: 42\n", 2, "'endpoint' must be text"),
    ("- id: a\n  files: [a.gguf]\n  remote_model: x\n", 3, "only applies to a remote engine"),
    ("- id: a\n  files: [a.gguf]\n  api_key_env: KEY\n", 3, "only applies to a remote engine"),
])
def test_malformed_remote_entries_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as err:
        load_file(path, origin="user")
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert words in message
