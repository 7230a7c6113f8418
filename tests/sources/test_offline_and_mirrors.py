"""Offline mode opens no socket at all; HF_ENDPOINT / MODELSCOPE_ENDPOINT are honoured as users set them."""

from __future__ import annotations

import socket

import pytest

from localchat.cli import main
from localchat.errors import OfflineError
from tests.support.cli import cli_without_hub_env as cli
from tests.support.sources import REPO, SPLIT_REPO, assert_installed, entry


@pytest.fixture
def no_sockets(monkeypatch):
    """Any connection attempt at all (loopback included) is recorded and refused."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise AssertionError(f"offline mode opened a connection to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_offline_pull_opens_no_socket_and_names_the_action(hub, model_files, localchat_home, no_sockets):
    from localchat.services import Services

    svc = Services.open(localchat_home, offline=True)
    for kind, location in (("hf", REPO), ("modelscope", REPO), ("url", hub.file_url(REPO, model_files.small.name))):
        with pytest.raises(OfflineError) as err:
            svc.installer.install(entry("m", [model_files.small], (kind, location)))
        assert "downloading 'm' from" in str(err.value) and "offline mode is on" in str(err.value)
    with pytest.raises(OfflineError, match="installing 'm' needs the network"):
        svc.installer.install(entry("m", [model_files.small], ("hf", REPO), ("modelscope", REPO)))
    assert no_sockets == []
    assert hub.log == []


def test_offline_search_and_add_open_no_socket(hub, localchat_home, no_sockets, capsys):
    assert main(["--offline", "search", "tiny"]) == 1
    assert "searching the model hubs needs the network" in capsys.readouterr().err
    assert main(["--offline", "add", f"hf:{REPO}", "tiny-chat-q4_k_m.gguf"]) == 1
    assert "needs the network, and offline mode is on" in capsys.readouterr().err
    assert no_sockets == [] and hub.log == []


def test_offline_in_config_yaml_works_like_the_flag(hub, svc, localchat_home, no_sockets, capsys):
    svc.paths.config_file.write_text("offline: true\n")
    svc.paths.user_catalog.write_text(f"- id: m\n  files: [x.gguf]\n  sources:\n    - hf: {REPO}\n")
    assert main(["pull", "m"]) == 1
    assert "offline mode is on" in capsys.readouterr().err
    assert no_sockets == []


def test_offline_import_of_a_local_file_still_works(svc, model_files, localchat_home, no_sockets, capsys):
    assert main(["--offline", "import", str(model_files.small), "--id", "usb"]) == 0
    assert "usb: installed" in capsys.readouterr().out
    assert no_sockets == []


def test_mirror_variables_set_before_start_are_honoured(hub, svc, model_files, localchat_home):
    """A fresh process, as a user runs it: the clients read the variables when they are imported."""
    svc.paths.user_catalog.write_text(
        f"- id: from-hf\n  files: [{model_files.small.name}]\n  sources:\n    - hf: {REPO}\n"
        f"- id: from-ms\n  files: [{model_files.split[0].name}, {model_files.split[1].name}, "
        f"{model_files.split[2].name}]\n  sources:\n    - modelscope: {SPLIT_REPO}\n")
    done = cli(["pull", "from-hf"], {"HF_ENDPOINT": hub.url}, localchat_home)
    assert done.returncode == 0, done.stderr
    done = cli(["pull", "from-ms"], {"MODELSCOPE_ENDPOINT": hub.url}, localchat_home)
    assert done.returncode == 0, done.stderr
    assert_installed(svc, "from-hf", [model_files.small])
    assert_installed(svc, "from-ms", model_files.split)
    assert any(r.path.startswith(f"/{REPO}/resolve/main/") for r in hub.log)
    assert any(r.path.startswith(f"/api/v1/models/{SPLIT_REPO}/repo/files") for r in hub.log)

