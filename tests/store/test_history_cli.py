"""`localchat history ...`: in process through register(), and through the real command line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from localchat.cli import history
from localchat.errors import ConversationFormatError, ConversationNotFound
from localchat.store import ConversationStore
from localchat.store.text import display_width


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="localchat")
    parser.add_argument("--home")
    history.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["history", *argv])
    return args.handler(args)


@pytest.fixture
def saved(paths):
    with ConversationStore.open(paths.db_path) as store:
        ids = []
        for title_text, model in [("How do I deploy a llama.cpp server behind nginx with TLS and basic auth?", "qwen2.5-7b-instruct"),
                                  ("帮我写一首关于秋天的诗，要有关键词：落叶", "qwen2.5-0.5b-instruct"),
                                  ("hi", "smollm2-135m-instruct")]:
            cid = store.create_conversation(model=model)
            store.add_message(cid, "user", title_text)
            with store.begin_reply(cid, model=model) as r:
                r.append(f"reply to {title_text}")
            ids.append(cid)
    return ids


def test_list_is_an_aligned_table_newest_first(saved, capsys):
    assert cli() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "TITLE", "MODEL", "MESSAGES", "LAST", "ACTIVITY"]
    assert [line.split()[0] for line in lines[1:]] == [str(i) for i in saved[::-1]]
    # every column starts at the same terminal column, CJK titles included
    model_col = display_width(lines[0][: lines[0].index("MODEL")])
    for line, model in zip(lines[1:], ["smollm2-135m-instruct", "qwen2.5-0.5b-instruct", "qwen2.5-7b-instruct"]):
        assert display_width(line[: line.index(model)]) == model_col
        assert line.endswith("just now") and " 2 " in line
    assert "nginx…" in lines[3]  # long titles are cut to fit

    assert cli("list", "--limit", "1") == 0
    out = capsys.readouterr().out
    assert "1 of 3 conversations shown" in out and "smollm2" in out and "qwen" not in out


def test_the_store_is_the_one_services_builds(saved, monkeypatch, capsys):
    """The history commands get their store from the composition root (the same as the TUI and the server)."""
    from localchat.services import Services

    opened = []

    def store(self):
        opened.append(self.paths.db_path)
        return ConversationStore.open(self.paths.db_path)

    monkeypatch.setattr(Services, "store", property(store))
    assert cli("list") == 0
    assert "TITLE" in capsys.readouterr().out
    assert len(opened) == 1 and opened[0].name == "conversations.db"


def test_list_when_empty(paths, capsys):
    assert cli() == 0
    assert "no saved conversations yet" in capsys.readouterr().out


def test_show_and_search(saved, capsys):
    assert cli("show", str(saved[1])) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 帮我写一首关于秋天的诗") and "## Assistant (qwen2.5-0.5b-instruct)" in out
    assert cli("show", "last") == 0
    assert capsys.readouterr().out.startswith("# hi\n")

    assert cli("search", "关键词") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == str(saved[1]) and out[0].endswith("· assistant")
    assert "[关键词]" in out[1] and "[关键词]" in out[3]
    assert cli("search", "deploy", "nginx") == 0
    assert "How do I [deploy] a llama.cpp server behind [nginx]" in capsys.readouterr().out
    assert cli("search", "nothing-like-this") == 0
    assert "no messages match" in capsys.readouterr().out


def test_export_import_rename_rm(saved, paths, tmp_path, capsys):
    target = tmp_path / "chat.json"
    assert cli("export", str(saved[0]), "--format", "json", "-o", str(target)) == 0
    assert json.loads(target.read_text(encoding="utf-8"))["messages"][0]["content"].startswith("How do I deploy")
    assert cli("export", str(saved[1]), "-f", "md") == 0
    assert capsys.readouterr().out.startswith("# 帮我写")

    assert cli("import", str(target)) == 0
    new_id = saved[-1] + 1
    assert f"imported conversation {new_id}: How do I deploy" in capsys.readouterr().out
    assert cli("rename", str(new_id), "Nginx", "notes") == 0
    assert f"renamed conversation {new_id}: Nginx notes" in capsys.readouterr().out
    assert cli("rm", str(saved[0]), str(new_id)) == 0
    with ConversationStore.open(paths.db_path) as store:
        assert [c.id for c in store.list_conversations()] == saved[:0:-1]


def test_errors_are_typed_and_nothing_is_half_done(saved, paths, tmp_path):
    with pytest.raises(ConversationNotFound, match="no conversation 99"):
        cli("show", "99")
    with pytest.raises(ConversationNotFound):
        cli("rm", str(saved[0]), "99")  # every id is checked before anything is deleted
    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": [{"role": "user"}]}')
    with pytest.raises(ConversationFormatError, match="bad.json: message 1 \\(user\\) has no text"):
        cli("import", str(bad))
    with pytest.raises(ConversationFormatError, match="cannot read .*missing.json"):
        cli("import", str(tmp_path / "missing.json"))
    with pytest.raises(SystemExit):
        cli("show", "abc")
    with ConversationStore.open(paths.db_path) as store:
        assert store.count_conversations() == 3


def localchat(*args, home):
    return subprocess.run([sys.executable, "-m", "localchat", "--home", str(home), "history", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})


def test_through_the_real_command_line(saved, localchat_home, tmp_path):
    out = localchat(home=localchat_home)
    assert out.returncode == 0 and "帮我写一首关于秋天的诗" in out.stdout, out.stderr
    out = localchat("search", "落叶", home=localchat_home)
    assert out.returncode == 0 and "[落叶]" in out.stdout
    out = localchat("show", "12345", home=localchat_home)
    assert out.returncode == 1
    assert out.stderr.strip() == "localchat: error: there is no conversation 12345: `localchat history` lists them"
    (localchat_home / "data" / "conversations.db").unlink()
    (localchat_home / "data" / "conversations.db").mkdir()
    out = localchat(home=localchat_home)
    assert out.returncode == 1 and "is a folder, not a conversation database" in out.stderr
    assert "Traceback" not in out.stderr
