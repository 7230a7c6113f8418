"""`localchat search`, `add` and `import` through the CLI, against the local hub."""

from __future__ import annotations

import os

import pytest

from localchat.catalog import ModelCatalog
from localchat.cli import main
from localchat.errors import CatalogError, SourceError
from localchat.sources.adding import default_id, template_for
from localchat.sources.facts import ModelFacts, read_facts
from localchat.sources.search import gguf_files, quant_of
from tests.support.cli import cli_without_hub_env as cli
from tests.support.ggufgen import make_tiny_gguf
from tests.support.sources import REPO, SPLIT_REPO, ModelFiles, assert_installed

USER_CATALOG = """\
# my own models (this comment must survive `localchat add`)
- id: mine
  files: [mine.gguf]
  sources:
    - url: https://models.example/mine.gguf   # internal artifact store
"""


def test_search_lists_repos_with_their_quant_files_on_both_hubs(hub, capsys):
    assert main(["search", "tiny", "split"]) == 0
    out = capsys.readouterr().out
    assert f"hf:{SPLIT_REPO}" in out and f"modelscope:{SPLIT_REPO}" in out
    assert "tiny-split-q8_0-00001-of-00003.gguf" in out and "Q8_0" in out and "(3 parts)" in out
    assert "tiny-split-q8_0-00002-of-00003.gguf" not in out  # parts are folded into one row
    assert f"localchat add hf:{SPLIT_REPO} tiny-split-q8_0-00001-of-00003.gguf" in out


def test_search_reports_a_hub_that_fails_and_still_shows_the_other(hub, localchat_home):
    # Nothing listens on port 9; the ModelScope client's own retries are cut to one try to keep this fast.
    env = {"HF_ENDPOINT": hub.url, "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9", "MODELSCOPE_API_MAX_RETRIES": "1"}
    done = cli(["search", "chat"], env, localchat_home)
    assert done.returncode == 0, done.stderr
    assert f"hf:{REPO}" in done.stdout and "tiny-chat-q4_k_m.gguf" in done.stdout
    assert "modelscope: cannot list models on http://127.0.0.1:9" in done.stderr


def test_add_from_hf_writes_a_verified_entry_and_keeps_the_users_comments(hub, svc, model_files, capsys):
    svc.paths.user_catalog.write_text(USER_CATALOG)
    assert main(["add", f"hf:{REPO}", model_files.small.name]) == 0
    assert "tiny-chat-q4_k_m: installed" in capsys.readouterr().out
    text = svc.paths.user_catalog.read_text()
    assert text.startswith(USER_CATALOG)  # appended; the user's text is untouched
    assert "verified against the hub's sha256" in text
    e = ModelCatalog.load(svc.paths.user_catalog).get("tiny-chat-q4_k_m")
    assert e.origin == "user" and e.files == (model_files.small.name,)
    assert e.sha256 == {model_files.small.name: ModelFiles.sha(model_files.small)}
    assert e.context == 2048 and e.template == "chatml" and e.quant == "Q4_K_M"
    assert e.size == model_files.small.stat().st_size and [s.label() for s in e.sources] == [f"hf:{REPO}"]
    assert_installed(svc, "tiny-chat-q4_k_m", [model_files.small])
    assert main(["verify", "tiny-chat-q4_k_m"]) == 0


def test_add_a_split_gguf_from_modelscope(hub, svc, model_files):
    assert main(["add", f"modelscope:{SPLIT_REPO}", model_files.split[0].name, "--id", "split"]) == 0
    e = ModelCatalog.load(svc.paths.user_catalog).get("split")
    assert e.files == tuple(p.name for p in model_files.split)
    assert e.sha256 == {p.name: ModelFiles.sha(p) for p in model_files.split}
    assert_installed(svc, "split", model_files.split)


def test_add_from_a_url_records_the_sha256_for_later_pulls(hub, svc, model_files):
    url = hub.file_url(REPO, model_files.small.name)
    assert main(["add", f"url:{url}", "--id", "web"]) == 0
    e = ModelCatalog.load(svc.paths.user_catalog).get("web")
    assert e.sha256 == {model_files.small.name: ModelFiles.sha(model_files.small)}
    assert [s.label() for s in e.sources] == [f"url:{url}"]


def test_add_refuses_bad_requests_before_downloading(hub, svc, model_files, capsys):
    svc.paths.user_catalog.write_text(USER_CATALOG)
    cases = [
        (["add", f"hf:{REPO}", model_files.small.name, "--id", "mine"], "'mine' is already in the catalog"),
        (["add", f"hf:{REPO}", model_files.small.name, "--id", "qwen2.5-0.5b-instruct"], "already in the catalog"),
        (["add", f"hf:{REPO}", model_files.small.name, "--id", "bad id!"], "invalid id"),
        (["add", f"hf:{SPLIT_REPO}", model_files.split[1].name], "not the first part"),
        (["add", f"hf:{REPO}"], "say which file"),
        (["add", f"gitlab:{REPO}", "x.gguf"], "not a model source"),
        (["add", f"hf:{REPO}", "notes.txt"], "must end in .gguf"),
    ]
    for args, message in cases:
        assert main(args) == 1
        assert message in capsys.readouterr().err
    assert svc.paths.user_catalog.read_text() == USER_CATALOG
    assert hub.bytes_sent() == 0


def test_add_of_a_missing_file_leaves_nothing_behind(hub, svc):
    with pytest.raises(SourceError, match="has no file"):
        from localchat.sources.adding import add_from_source

        add_from_source(svc, f"hf:{REPO}", "absent-q4_k_m.gguf")
    assert not svc.paths.user_catalog.exists() and svc.registry.all() == {}


def test_import_hard_links_a_local_file_and_adds_a_file_entry(svc, model_files, tmp_path, capsys):
    src = tmp_path / "usb" / "My-Model.Q4_K_M.gguf"
    src.parent.mkdir()
    src.write_bytes(model_files.small.read_bytes())
    assert main(["import", str(src)]) == 0
    e = ModelCatalog.load(svc.paths.user_catalog).get("my-model.q4_k_m")
    assert [s.label() for s in e.sources] == [f"file:{src}"]
    assert e.sha256 == {src.name: ModelFiles.sha(src)} and e.quant == "Q4_K_M"
    rec = svc.registry.get(e.id)
    assert os.stat(rec.path).st_ino == os.stat(src).st_ino
    assert "sha256 recorded at import" in svc.paths.user_catalog.read_text()


def test_import_refuses_what_is_not_a_gguf_and_writes_nothing(svc, tmp_path, capsys):
    bogus = tmp_path / "holiday.gguf"
    bogus.write_bytes(b"\x89PNG\r\n" + b"\0" * 100)
    assert main(["import", str(bogus)]) == 1
    assert "not a GGUF model file" in capsys.readouterr().err
    assert not svc.paths.user_catalog.exists() and svc.registry.all() == {}
    assert main(["import", str(tmp_path / "missing.gguf")]) == 1
    assert "is not a file" in capsys.readouterr().err


def test_import_a_split_gguf_needs_every_part(svc, model_files, tmp_path, capsys):
    folder = tmp_path / "parts"
    folder.mkdir()
    for p in model_files.split[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    assert main(["import", str(folder / model_files.split[0].name)]) == 1
    assert model_files.split[2].name in capsys.readouterr().err
    (folder / model_files.split[2].name).write_bytes(model_files.split[2].read_bytes())
    assert main(["import", str(folder / model_files.split[0].name), "--id", "parts"]) == 0
    assert_installed(svc, "parts", [folder / p.name for p in model_files.split])


def test_read_facts_from_the_gguf_header(model_files, tmp_path):
    facts = read_facts(model_files.small)
    assert facts.architecture == "llama" and facts.context_length == 2048 and facts.name == "tiny-test"
    assert "<|im_start|>" in facts.chat_template and facts.quant == "F32"
    bare = make_tiny_gguf(tmp_path / "bare.gguf", reply="Hi!", n_embd=64, chat_template=None, n_ctx_train=512)
    assert read_facts(bare).chat_template is None and read_facts(bare).context_length == 512
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(model_files.small.read_bytes()[:3000])
    from localchat.errors import GGUFError

    with pytest.raises(GGUFError, match="is truncated"):
        read_facts(truncated)


def test_template_choice():
    # By rendering probe conversations, not by names: the architecture says nothing either way (issue 14).
    from tests.support.ggufgen import CHATML_TEMPLATE
    from tests.support.thinking_templates import QWEN3_STYLE, QWEN25_STYLE

    assert template_for(ModelFacts()) == "chatml"
    assert template_for(ModelFacts(architecture="qwen2", chat_template=QWEN25_STYLE)) == "qwen"
    assert template_for(ModelFacts(architecture="qwen2", chat_template=CHATML_TEMPLATE)) == "chatml"
    assert template_for(ModelFacts(architecture="llama", chat_template=QWEN25_STYLE)) == "qwen"
    assert template_for(ModelFacts(architecture="qwen3", chat_template=QWEN3_STYLE)) == "gguf"
    assert template_for(ModelFacts(chat_template="[INST] {{ m }} [/INST]")) == "gguf"


def test_names_and_grouping():
    assert default_id("Qwen2.5-Coder-7B-Instruct-Q4_K_M-00001-of-00002.gguf") == "qwen2.5-coder-7b-instruct-q4_k_m"
    assert quant_of("qwen2.5-coder-7b-instruct-q4_k_m.gguf") == "Q4_K_M"
    assert quant_of("Llama-3.2-1B-Instruct-IQ3_XS.gguf") == "IQ3_XS" and quant_of("model.gguf") is None
    files = gguf_files([("a-q8_0-00001-of-00002.gguf", 10), ("a-q8_0-00002-of-00002.gguf", 5), ("b-q4_0.gguf", 7),
                        ("c-00001-of-00002.gguf", 1), ("sub/x.gguf", 3), ("README.md", 1)])
    assert [(f.name, f.size, f.parts, f.quant) for f in files] == [
        ("b-q4_0.gguf", 7, 1, "Q4_0"), ("a-q8_0-00001-of-00002.gguf", 15, 2, "Q8_0")]  # c lacks a part


def test_append_entry_refuses_what_would_not_validate(svc):
    from localchat.usercatalog import append_entry, render_entry

    svc.paths.user_catalog.write_text(USER_CATALOG)
    with pytest.raises(CatalogError, match="duplicate id 'mine'"):
        append_entry(svc.paths.user_catalog, render_entry({"id": "mine", "files": ["x.gguf"]}))
    with pytest.raises(CatalogError, match="must be an absolute path"):
        append_entry(svc.paths.user_catalog, render_entry({"id": "b", "files": ["b.gguf"],
                                                             "sources": [{"file": "relative/b.gguf"}]}))
    assert svc.paths.user_catalog.read_text() == USER_CATALOG
    e = append_entry(svc.paths.user_catalog, render_entry(
        {"id": "c", "name": "yes: a colon # and hash", "files": ["c.gguf"], "sha256": "1" * 64,
         "sources": [{"hf": "o/r", "revision": "0123"}]}))
    assert e.name == "yes: a colon # and hash" and e.sha256 == {"c.gguf": "1" * 64}
    assert e.sources[0].options == {"revision": "0123"}
