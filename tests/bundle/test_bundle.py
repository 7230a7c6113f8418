"""Bundles between two LOCALCHAT_HOME folders: the round trip, and every way a bundle can be bad."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from localchat.bundle import export_bundle, import_bundle, inspect_bundle, verify_bundle
from localchat.errors import BundleError, Cancelled, GGUFError, IntegrityError, NotInstalledError, UnknownModelError
from localchat.services import Services
from localchat.sources import CancelToken

MEMBER_A = "models/tiny-a/tiny-a.gguf"
MEMBER_B = "models/tiny-b/tiny-b.gguf"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(source_home: Path, tmp_path: Path, ids=("tiny-a", "tiny-b")) -> Path:
    out = tmp_path / "usb" / "models.lcb"
    export_bundle(Services.open(source_home), list(ids), out)
    return out


def members(bundle: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(bundle) as tf:
        return {m.name: m for m in tf.getmembers()}


def rewrite(bundle: Path, out: Path, manifest=None, rename: dict[str, str] | None = None,
            kinds: dict[str, bytes] | None = None, contents: dict[str, bytes] | None = None) -> Path:
    """Copy a bundle member by member, changing the manifest, member names, types or contents on the way."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            data = (contents or {}).get(info.name) or src.extractfile(info).read()
            if info.name == "manifest.json" and manifest is not None:
                doc = json.loads(data)
                manifest(doc)
                data = json.dumps(doc).encode()
            new = tarfile.TarInfo((rename or {}).get(info.name, info.name))
            new.size = len(data)
            if kinds and info.name in kinds:
                new.type, new.linkname, new.size = kinds[info.name], "/etc/passwd", 0
                dst.addfile(new)
                continue
            dst.addfile(new, io.BytesIO(data))
    return out


def assert_nothing_imported(home: Path) -> None:
    svc = Services.open(home)
    assert svc.registry.all() == {}
    assert not svc.paths.user_catalog.exists()
    assert not any(p.is_file() for p in svc.paths.models_dir.rglob("*"))
    assert not any(svc.paths.downloads_dir.rglob("*")), "staged files were left behind"


# --- the round trip ----------------------------------------------------------------------------


def test_export_import_round_trip(source_home, target_home, tmp_path, tiny_pair):
    reports = []
    out = tmp_path / "usb" / "models.lcb"
    manifest = export_bundle(Services.open(source_home), ["tiny-a", "tiny-b"], out, progress=reports.append)
    assert out.is_file() and not out.with_name("models.lcb.partial").exists()
    assert manifest.ids == ["tiny-a", "tiny-b"]
    assert manifest.size == sum(p.stat().st_size for p in tiny_pair)
    last = [r for r in reports if r.file == "tiny-b.gguf" and r.phase == "export"][-1]
    assert last.done == last.total == tiny_pair[1].stat().st_size

    # An ordinary tar: the manifest first, then the files, byte for byte.
    with tarfile.open(out) as tf:
        assert tf.getnames() == ["manifest.json", MEMBER_A, MEMBER_B]
        assert tf.extractfile(MEMBER_B).read() == tiny_pair[1].read_bytes()
        doc = json.load(tf.extractfile("manifest.json"))
    assert doc["format"] == "localchat-bundle" and doc["version"] == 1
    a = doc["models"][0]
    assert a["entry"]["template"] == "chatml" and a["entry"]["context"] == 2048
    assert a["files"] == [{"name": "tiny-a.gguf", "member": MEMBER_A, "size": tiny_pair[0].stat().st_size,
                           "sha256": sha256(tiny_pair[0])}]

    seen = inspect_bundle(out)
    assert [(m.id, m.size, m.entry.template) for m in seen.models] == [
        ("tiny-a", tiny_pair[0].stat().st_size, "chatml"), ("tiny-b", tiny_pair[1].stat().st_size, "chatml")]

    target = Services.open(target_home)
    reports.clear()
    installed = import_bundle(target, out, progress=reports.append)
    assert [r.id for r in installed] == ["tiny-a", "tiny-b"]
    for rec, original in zip(installed, tiny_pair):
        assert rec.path == target.paths.models_dir / rec.id / original.name
        assert rec.path.read_bytes() == original.read_bytes()
        assert rec.source == "bundle:models.lcb"
        assert target.installer.verify(rec.id).ok
    assert {r.phase for r in reports} >= {"import", "done"}
    # The entries arrived in the user catalog, pinned to the verified hashes; a fresh process sees them.
    fresh = Services.open(target_home)
    entry = fresh.entry("tiny-b")
    assert entry.origin == "user" and entry.sha256 == {"tiny-b.gguf": sha256(tiny_pair[1])}
    assert entry.template == "chatml" and fresh.installed_ids() == ["tiny-a", "tiny-b"]
    assert not any(p.is_file() for p in fresh.paths.downloads_dir.rglob("*"))

    # Importing the same bundle again is harmless: same files, no duplicate catalog entries.
    again = import_bundle(Services.open(target_home), out)
    assert [r.id for r in again] == ["tiny-a", "tiny-b"]
    assert Services.open(target_home).paths.user_catalog.read_text().count("- id:") == 2


def test_export_streams_without_a_temporary_copy(source_home, tmp_path):
    svc = Services.open(source_home)
    out = export(source_home, tmp_path)
    assert sorted(p.name for p in out.parent.iterdir()) == ["models.lcb"]
    assert not any(p.is_file() for d in (svc.paths.downloads_dir, svc.paths.cache_dir) for p in d.rglob("*"))
    assert verify_bundle(out).ids == ["tiny-a", "tiny-b"]


def test_export_refuses_a_model_changed_since_install(source_home, tmp_path):
    svc = Services.open(source_home)
    path = svc.installed("tiny-b").path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # bit rot: same size, other bytes
    path.write_bytes(bytes(data))
    out = tmp_path / "models.lcb"
    with pytest.raises(IntegrityError, match="changed since it was installed"):
        export_bundle(svc, ["tiny-a", "tiny-b"], out)
    assert list(tmp_path.glob("models.lcb*")) == []


def test_export_names_what_is_missing(source_home, tmp_path):
    svc = Services.open(source_home)
    with pytest.raises(NotInstalledError, match="smollm2-135m-instruct"):
        export_bundle(svc, ["smollm2-135m-instruct"], tmp_path / "x.lcb")
    with pytest.raises(UnknownModelError, match="tiny-c"):
        export_bundle(svc, ["tiny-c"], tmp_path / "x.lcb")
    (tmp_path / "exists.lcb").write_text("keep me")
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(svc, ["tiny-a"], tmp_path / "exists.lcb")
    assert (tmp_path / "exists.lcb").read_text() == "keep me"


# --- bad bundles: refused, naming the member, nothing installed ----------------------------------


@pytest.mark.parametrize("member", [MEMBER_A, MEMBER_B])
def test_a_flipped_byte_is_refused(source_home, target_home, tmp_path, member):
    out = export(source_home, tmp_path)
    info = members(out)[member]
    with open(out, "r+b") as f:
        f.seek(info.offset_data + info.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x20]))
    with pytest.raises(IntegrityError) as err:
        import_bundle(Services.open(target_home), out)
    assert f"member '{member}' does not match its sha256" in str(err.value)
    assert_nothing_imported(target_home)  # tiny-a is not installed even when only tiny-b is bad
    with pytest.raises(IntegrityError, match=member):
        verify_bundle(out)


@pytest.mark.parametrize("where", ["inside-second-file", "after-first-file", "inside-first-file", "inside-manifest"])
def test_a_truncated_bundle_is_refused(source_home, target_home, tmp_path, where):
    out = export(source_home, tmp_path)
    info = members(out)
    cut = {
        "inside-second-file": (info[MEMBER_B].offset_data + 1000, MEMBER_B),
        "after-first-file": (info[MEMBER_B].offset, MEMBER_B),
        "inside-first-file": (info[MEMBER_A].offset_data + info[MEMBER_A].size // 3, MEMBER_A),
        "inside-manifest": (700, "manifest.json"),
    }[where]
    os.truncate(out, cut[0])
    with pytest.raises(BundleError) as err:
        import_bundle(Services.open(target_home), out)
    message = str(err.value)
    assert "truncated" in message or "not a localchat bundle" in message, message
    if where != "inside-manifest":
        assert cut[1] in message
    assert_nothing_imported(target_home)


def test_a_manifest_that_lies_about_a_hash_is_refused(source_home, target_home, tmp_path):
    out = export(source_home, tmp_path)
    fake = "ab" * 32

    def lie(doc):  # consistent everywhere in the manifest, but not what the bytes hash to
        model = doc["models"][1]
        model["files"][0]["sha256"] = fake
        model["entry"]["sha256"] = {"tiny-b.gguf": fake}

    bad = rewrite(out, tmp_path / "lying.lcb", manifest=lie)
    with pytest.raises(IntegrityError, match=f"member '{MEMBER_B}' does not match its sha256"):
        import_bundle(Services.open(target_home), bad)
    assert_nothing_imported(target_home)

    def contradict(doc):  # the catalog data and the file list disagree
        doc["models"][0]["files"][0]["sha256"] = fake

    bad = rewrite(out, tmp_path / "contradicting.lcb", manifest=contradict)
    with pytest.raises(IntegrityError, match="contradicts itself"):
        inspect_bundle(bad)
    assert_nothing_imported(target_home)


def test_a_bundle_cannot_replace_a_catalog_model_with_other_bytes(source_home, target_home, tmp_path):
    """A manifest that claims to carry the shipped SmolLM2 (whose sha256 the catalog pins) is refused."""
    out = export(source_home, tmp_path, ids=["tiny-a"])

    def impersonate(doc):
        model = doc["models"][0]
        model["id"] = model["entry"]["id"] = "smollm2-135m-instruct"
        model["files"][0]["member"] = "models/smollm2-135m-instruct/tiny-a.gguf"

    bad = rewrite(out, tmp_path / "fake-smol.lcb", manifest=impersonate,
                  rename={MEMBER_A: "models/smollm2-135m-instruct/tiny-a.gguf"})
    with pytest.raises(BundleError, match="already in your catalog"):
        import_bundle(Services.open(target_home), bad)

    def impersonate_files(doc):
        impersonate(doc)
        model = doc["models"][0]
        model["entry"]["files"] = ["SmolLM2-135M-Instruct.Q4_1.gguf"]
        model["entry"]["sha256"] = {"SmolLM2-135M-Instruct.Q4_1.gguf": model["files"][0]["sha256"]}
        model["files"][0].update(name="SmolLM2-135M-Instruct.Q4_1.gguf",
                                 member="models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")

    bad = rewrite(out, tmp_path / "fake-smol2.lcb", manifest=impersonate_files,
                  rename={MEMBER_A: "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"})
    with pytest.raises(IntegrityError, match="catalog pins"):
        import_bundle(Services.open(target_home), bad)
    assert_nothing_imported(target_home)


@pytest.mark.skipif(importlib.util.find_spec("localchat.gguf") is None, reason="needs the GGUF reader")
def test_a_consistent_bundle_of_something_that_is_not_a_gguf_is_refused(source_home, target_home, tmp_path):
    """Hashes only prove the bytes are the ones the manifest names; the file must also be a sane GGUF."""
    out = export(source_home, tmp_path)
    payload = b"GGUF" + os.urandom(4096)
    digest = hashlib.sha256(payload).hexdigest()

    def swap(doc):
        model = doc["models"][1]
        model["files"][0].update(size=len(payload), sha256=digest)
        model["entry"].update(size=len(payload), sha256={"tiny-b.gguf": digest})

    bad = rewrite(out, tmp_path / "not-gguf.lcb", manifest=swap, contents={MEMBER_B: payload})
    with pytest.raises(GGUFError):
        import_bundle(Services.open(target_home), bad)
    assert_nothing_imported(target_home)


@pytest.mark.parametrize("name", ["models/tiny-a/../../../../evil.gguf", "../evil.gguf", "/tmp/evil.gguf",
                                  "models/tiny-a/tiny-a.gguf/../../../evil.gguf"])
def test_path_traversal_members_are_refused(source_home, target_home, tmp_path, name):
    out = export(source_home, tmp_path, ids=["tiny-a"])
    bad = rewrite(out, tmp_path / "traversal.lcb", rename={MEMBER_A: name})
    with pytest.raises(BundleError) as err:
        import_bundle(Services.open(target_home), bad)
    assert f"member '{name}' points outside the bundle" in str(err.value)
    assert_nothing_imported(target_home)
    assert not list(tmp_path.rglob("evil.gguf")) and not Path("/tmp/evil.gguf").exists()


def test_a_manifest_naming_a_path_outside_is_refused(source_home, target_home, tmp_path):
    out = export(source_home, tmp_path, ids=["tiny-a"])

    def escape(doc):
        model = doc["models"][0]
        model["entry"]["files"] = ["../../evil.gguf"]
        model["entry"]["sha256"] = {"../../evil.gguf": model["files"][0]["sha256"]}
        model["files"][0].update(name="../../evil.gguf", member="models/tiny-a/../../evil.gguf")

    bad = rewrite(out, tmp_path / "escape.lcb", manifest=escape, rename={MEMBER_A: "models/tiny-a/../../evil.gguf"})
    with pytest.raises(BundleError, match="plain file name"):
        inspect_bundle(bad)
    with pytest.raises(BundleError):
        import_bundle(Services.open(target_home), bad)
    assert_nothing_imported(target_home)


@pytest.mark.parametrize("kind, words", [(tarfile.SYMTYPE, "is a link"), (tarfile.LNKTYPE, "is a link"),
                                         (tarfile.CHRTYPE, "is a device"), (tarfile.FIFOTYPE, "is a device")])
def test_links_and_devices_are_refused(source_home, target_home, tmp_path, kind, words):
    out = export(source_home, tmp_path, ids=["tiny-a"])
    bad = rewrite(out, tmp_path / "link.lcb", kinds={MEMBER_A: kind})
    with pytest.raises(BundleError, match=f"member '{MEMBER_A}' {words}"):
        import_bundle(Services.open(target_home), bad)
    assert_nothing_imported(target_home)


def test_extra_or_repeated_members_are_refused(source_home, target_home, tmp_path):
    out = export(source_home, tmp_path, ids=["tiny-a"])
    extra = tmp_path / "extra.lcb"
    rewrite(out, extra)
    with tarfile.open(extra, "a") as tf:
        info = tarfile.TarInfo("models/tiny-a/payload.sh")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"rm!"))
    with pytest.raises(BundleError, match="member 'models/tiny-a/payload.sh' is not in the manifest"):
        import_bundle(Services.open(target_home), extra)
    assert_nothing_imported(target_home)


@pytest.mark.parametrize("content, words", [
    (b"", "not a localchat bundle"),
    (b"GGUF" + bytes(5000), "not a localchat bundle"),
    ("tar-without-manifest", "does not start with manifest.json"),
    ("newer", "made by a newer localchat"),
    ("other-format", "not a localchat bundle"),
    ("not-json", "not valid JSON"),
])
def test_unknown_formats_are_refused(target_home, tmp_path, content, words):
    path = tmp_path / "thing.lcb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        docs = {"newer": {"format": "localchat-bundle", "version": 2, "models": []},
                "other-format": {"format": "something-else", "version": 1}}
        with tarfile.open(path, "w") as tf:
            name = "README" if content == "tar-without-manifest" else "manifest.json"
            data = b"{not json" if content == "not-json" else json.dumps(docs.get(content, {})).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError, match=words):
        import_bundle(Services.open(target_home), path)
    assert_nothing_imported(target_home)


def test_cancelling_an_import_leaves_nothing(source_home, target_home, tmp_path):
    out = export(source_home, tmp_path)
    cancel = CancelToken()

    def progress(report):
        if report.phase == "import" and report.model_id == "tiny-b":
            cancel.cancel()

    with pytest.raises(Cancelled):
        import_bundle(Services.open(target_home), out, progress=progress, cancel=cancel)
    assert_nothing_imported(target_home)


# --- the command line ----------------------------------------------------------------------------


def localchat(*args, home):
    return subprocess.run([sys.executable, "-m", "localchat", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=300)


def test_bundle_commands(source_home, target_home, tmp_path, tiny_pair):
    out = tmp_path / "models.lcb"
    r = localchat("bundle", "export", "tiny-a", "tiny-b", "-o", str(out), home=source_home)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "2 model(s)" in r.stdout

    r = localchat("bundle", "inspect", str(out), home=target_home)
    assert r.returncode == 0, r.stderr
    assert sha256(tiny_pair[0]) in r.stdout and "tiny-b" in r.stdout and "not imported" in r.stdout
    assert Services.open(target_home).registry.all() == {}

    r = localchat("bundle", "inspect", "--verify", str(out), home=target_home)
    assert r.returncode == 0 and "every file matches its sha256" in r.stdout

    r = localchat("bundle", "import", str(out), home=target_home)
    assert r.returncode == 0, r.stderr
    assert "tiny-a: installed" in r.stdout and "added tiny-a, tiny-b to your catalog" in r.stdout
    r = localchat("list", "--installed", home=target_home)
    assert "tiny-a" in r.stdout and "tiny-b" in r.stdout
    assert localchat("verify", home=target_home).stdout.split() == ["tiny-a:", "ok", "tiny-b:", "ok"]


def test_bundle_command_errors_are_one_line(source_home, target_home, tmp_path):
    out = tmp_path / "models.lcb"
    assert localchat("bundle", "export", "tiny-a", "-o", str(out), home=source_home).returncode == 0
    os.truncate(out, out.stat().st_size // 2)
    r = localchat("bundle", "import", str(out), home=target_home)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    error = r.stderr.strip().splitlines()[-1]  # after the progress lines (stderr is not a terminal here)
    assert error.startswith("localchat: error: ") and r.stderr.count("localchat: error") == 1
    assert "truncated" in error and MEMBER_A in error
    r = localchat("bundle", "export", "nope", "-o", str(tmp_path / "x.lcb"), home=source_home)
    assert r.returncode == 1 and "unknown model 'nope'" in r.stderr
