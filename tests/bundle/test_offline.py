"""Offline mode is enforced: no connection except to loopback, proven around real processes."""

from __future__ import annotations

import asyncio
import http.server
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from localchat import offline
from localchat.errors import OfflineError
from localchat.offline import is_loopback_host, offline_guard
from tests.support.netspy import PROBE_HOST, NetSpy


@pytest.fixture
def loopback_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


# --- the guard itself ----------------------------------------------------------------------------


def test_the_guard_refuses_the_network_and_allows_loopback(loopback_server):
    port = loopback_server.server_port
    with offline_guard():
        assert offline.is_enforced() and os.environ["LOCALCHAT_OFFLINE"] == "1"
        with pytest.raises(OfflineError, match="refused looking up 'huggingface.co'"):
            urllib.request.urlopen("https://huggingface.co/api/models", timeout=2)
        with pytest.raises(OfflineError, match=f"refused a connection to {PROBE_HOST}:80"):
            socket.create_connection((PROBE_HOST, 80), timeout=1)
        with pytest.raises(OfflineError, match=r"\[2001:db8::1\]:443"):
            socket.socket(socket.AF_INET6, socket.SOCK_STREAM).connect(("2001:db8::1", 443, 0, 0))
        with pytest.raises(OfflineError, match="8.8.8.8:53"):  # a DNS query by hand is UDP, no connect()
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"\0" * 12, ("8.8.8.8", 53))
        with pytest.raises(OfflineError, match="::ffff:10.0.0.1"):  # an IPv4 address dressed as IPv6
            socket.socket(socket.AF_INET6).connect(("::ffff:10.0.0.1", 80, 0, 0))
        with pytest.raises(OfflineError, match="looking up 'pypi.org'"):
            socket.getaddrinfo("pypi.org", 443)

        # Loopback, by address and by name, local sockets and address literals (no lookup) still work.
        for host in ("127.0.0.1", "localhost"):
            assert urllib.request.urlopen(f"http://{host}:{port}/", timeout=5).read() == b"hello"
        a, b = socket.socketpair()
        a.sendall(b"ok")
        assert b.recv(2) == b"ok"
        a.close(), b.close()
        assert socket.getaddrinfo("0.0.0.0", 8000)[0][4][0] == "0.0.0.0"
    assert not offline.is_enforced() and "LOCALCHAT_OFFLINE" not in os.environ


def test_the_guard_holds_for_http_clients_and_asyncio():
    import requests

    with offline_guard():
        with pytest.raises(OfflineError):
            requests.get("https://pypi.org/simple/", timeout=2)
        with pytest.raises(OfflineError):
            asyncio.run(asyncio.open_connection(PROBE_HOST, 443))


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST.", True), ("api.localhost", True), ("::ffff:127.0.0.1", True), (None, True),
    ("0.0.0.0", False), ("10.0.0.1", False), ("localhost.example.com", False), ("huggingface.co", False),
    ("::ffff:8.8.8.8", False), (b"127.0.0.1", True), (b"example.org", False),
])
def test_what_counts_as_loopback(host, loopback):
    assert is_loopback_host(host) is loopback


def test_services_open_enforces_offline_from_config(localchat_home):
    from localchat.services import Services

    (localchat_home / "config").mkdir(parents=True)
    (localchat_home / "config" / "config.yaml").write_text("offline: true\n")
    svc = Services.open(localchat_home)
    assert svc.offline and offline.is_enforced()
    with pytest.raises(OfflineError):
        socket.create_connection((PROBE_HOST, 443), timeout=1)


def test_offline_pull_stops_before_pip_runs(localchat_home, tmp_path):
    spy = NetSpy(tmp_path / "spy")
    out = subprocess.run([sys.executable, "-m", "localchat", "--offline", "pull", "smollm2-135m-instruct"],
                         capture_output=True, text=True, env=spy.env(), timeout=120)
    assert out.returncode == 1 and "offline" in out.stderr
    assert not any("pip" in " ".join(argv) for argv in spy.processes().values())
    assert [r.data["outcome"] for r in spy.records() if r.event == "probe"] == ["OfflineError"]


# --- a whole session, watched from outside ------------------------------------------------------


def _have(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:  # the parent package is missing
        return False


def _allowed(record) -> bool:
    """A network event that stays on this machine."""
    if record.event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        if record.data["family"] not in (socket.AF_INET, socket.AF_INET6):
            return True  # AF_UNIX and friends
        return is_loopback_host(record.data["host"])
    host = record.data["host"]
    return is_loopback_host(host) or host in ("", "0.0.0.0", "::")


@pytest.mark.skipif(not _have("localchat.engine.client", "localchat.store", "localchat.templates"),
                    reason="needs the engine, store and templates packages")
def test_a_whole_offline_session_opens_no_connection(tmp_path, tiny_pair):
    """Start, chat through `localchat run`, swap models on the same conversation, list, history, and a
    pull that would need the network: every process (CLI and engine workers) is watched by a spy that
    records each connect/send/lookup; only loopback or local sockets may appear, and the guard must be
    armed in every CLI process (its exit probe to TEST-NET is refused with OfflineError)."""
    from tests.support.models import register_local_model

    home = tmp_path / "home"
    register_local_model(home, tiny_pair[0], model_id="tiny-a", template="chatml", context=2048)
    register_local_model(home, tiny_pair[1], model_id="tiny-b", template="chatml", context=2048)
    offline.release()  # registering opened Services in this process; the session runs in subprocesses
    (home / "config" / "config.yaml").write_text("offline: true\n")  # the config turns it on, no flag
    spy = NetSpy(tmp_path / "spy")
    env = {**spy.env(), "LOCALCHAT_HOME": str(home)}
    env.pop("LOCALCHAT_OFFLINE", None)

    def localchat(*args, check=True):
        out = subprocess.run([sys.executable, "-m", "localchat", *args], capture_output=True, text=True, env=env,
                             timeout=300)
        if check:
            assert out.returncode == 0, out.stderr
        return out

    assert "tiny-a" in localchat("list").stdout
    assert localchat("run", "tiny-a", "hello", "--temperature", "0").stdout.strip() == "Hi!"
    assert localchat("run", "tiny-b", "and you?", "--temperature", "0", "--continue").stdout.strip() == "Yo?"
    history = localchat("history").stdout
    assert "hello" in history or "1" in history
    shown = localchat("history", "show", "last").stdout
    assert "Hi!" in shown and "Yo?" in shown
    pull = localchat("pull", "smollm2-135m-instruct", check=False)
    assert pull.returncode == 1 and "offline" in pull.stderr
    assert "offline        on" in localchat("--offline", "doctor").stdout

    records = spy.records()
    processes = spy.processes()
    cli = [pid for pid, argv in processes.items() if argv[1:3] == ["-m", "localchat"]]
    workers = [pid for pid, argv in processes.items() if "localchat.engine.worker" in argv]
    assert len(cli) == 7 and len(workers) >= 2, processes
    probes = {r.pid: r.data["outcome"] for r in records if r.event == "probe"}
    assert probes == {pid: "OfflineError" for pid in cli}, "the guard was not armed in every CLI process"
    leaks = [(processes.get(r.pid), r.event, r.data) for r in records
             if r.event.startswith("socket.") and not _allowed(r) and not (r.data.get("host") == PROBE_HOST
                                                                        and r.pid in cli)]
    assert leaks == []
    assert sum(1 for r in records if r.event == "socket.connect" and r.data.get("host") == PROBE_HOST) == len(cli), \
        "the spy must see the probes' connection attempts (or it proves nothing)"
    assert not any("pip" in " ".join(argv) for argv in processes.values())


def test_a_bundle_imports_with_the_guard_on(tmp_path, tiny_pair):
    """The air-gapped path end to end: export on one machine, import and verify on one that is offline."""
    from localchat.bundle import export_bundle, import_bundle
    from localchat.services import Services
    from tests.support.models import register_local_model

    source = register_local_model(tmp_path / "online", tiny_pair[0], model_id="tiny-a")
    bundle = tmp_path / "usb" / "models.lcb"
    export_bundle(source, ["tiny-a"], bundle)
    with offline_guard():
        target = Services.open(tmp_path / "air-gapped")
        assert target.offline
        [rec] = import_bundle(target, bundle)
        assert target.installer.verify(rec.id).ok
        with pytest.raises(OfflineError):
            socket.create_connection((PROBE_HOST, 443), timeout=1)
