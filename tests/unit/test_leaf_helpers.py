"""The leaf helpers: atomic writes, free-space checks, byte formatting, the TLS context, the loopback test."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from localchat import fsutil
from localchat.errors import ConfigError, DiskFullError
from localchat.netutil import is_loopback_host, is_loopback_url, tls_context
from localchat.units import human_size


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    fsutil.atomic_write_text(target, "old")
    fsutil.atomic_write_text(target, "néw")
    assert target.read_text(encoding="utf-8") == "néw"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_atomic_output_failure_keeps_old_content(tmp_path):
    target = tmp_path / "bundle.lcb"
    fsutil.atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), fsutil.atomic_output(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk pulled")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.lcb"]


def test_require_free_space_says_how_much(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "disk_free", lambda path: 1_500_000)
    fsutil.require_free_space(tmp_path, 1_000_000, "to download x.gguf")
    with pytest.raises(DiskFullError) as err:
        fsutil.require_free_space(tmp_path, 2_000_000_000, "to download x.gguf")
    assert "to download x.gguf: it needs 2.0 GB, 1.5 MB free at" in str(err.value)


def test_disk_free_of_a_path_not_yet_created(tmp_path):
    assert fsutil.disk_free(tmp_path / "a" / "b") == fsutil.disk_free(tmp_path) > 0


@pytest.mark.parametrize("n, text", [(None, "?"), (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (491_400_000, "491.4 MB"),
                                     (1_100_000_000, "1.1 GB"), (2.5e12, "2.5 TB"), (1234.5, "1.2 kB")])
def test_one_byte_convention(n, text):
    assert human_size(n) == text


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
                                            ("localhost", True), ("LOCALHOST.", True), ("::ffff:127.0.0.1", True),
                                            ("10.0.0.1", False), ("example.com", False), ("", False), ("0.0.0.0", False)])
def test_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("url, loopback", [("http://[::1]:8000/v1", True), ("https://localhost/v1", True),
                                           ("http://127.0.0.2:9000", True), ("http://10.0.0.1:8000/v1", False),
                                           ("http://example.com", False), ("not a url", False)])
def test_loopback_url(url, loopback):
    assert is_loopback_url(url) is loopback


@pytest.fixture
def ca_file(tmp_path):
    cert = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localchat test CA"], check=True, capture_output=True)
    return cert


@pytest.mark.parametrize("var", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_tls_context_loads_the_named_ca(ca_file, monkeypatch, var):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.setenv(var, str(ca_file))
    ctx = tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "localchat test CA"),),)]


def test_remote_engine_uses_the_shared_context(ca_file, monkeypatch):
    from localchat.engine.remote import _Server

    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    conn = _Server("https://127.0.0.1:8443/v1", None, None).connection(timeout=1.0)
    assert conn._context is tls_context()


def test_tls_context_unreadable_ca_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE"):
        tls_context()
