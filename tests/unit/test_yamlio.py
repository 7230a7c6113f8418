"""yamlio: the one YAML loader; config.yaml gets the catalog's file:line errors."""

from __future__ import annotations

import pytest

from localchat.config import Config
from localchat.errors import CatalogError, ConfigError
from localchat.yamlio import compose, dump


def test_config_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("offline: false\nsampling:\n  temperature: [0.5\n  top_p: 0.9\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Config.load_file(path)
    assert f"{path}:4: invalid YAML" in str(info.value)


@pytest.mark.parametrize(("text", "line", "what"), [
    ("offline: false\nsampling:\n  top_k: 40\n  temperature: hot\n", 4, "sampling.temperature"),
    ("theme: dark\noffline: maybe\n", 2, "offline must be true or false"),
    ("models:\n  qwen:\n    load:\n      n_ctx: [1, 2]\n", 4, "models.qwen.load.n_ctx"),
    ("system_prompt: hi\nload: 5\n", 2, "load must be a mapping"),
    ("offline: true\n\ncolour: red\n", 3, "unknown setting(s) colour"),
])
def test_config_wrong_type_names_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Config.load_file(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert what in str(info.value)


def test_config_duplicate_key_and_alias_bomb_are_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("offline: true\noffline: false\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r":2: duplicate key 'offline'"):
        Config.load_file(path)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    path.write_text(bomb, encoding="utf-8")
    with pytest.raises(ConfigError, match="aliases expanding"):
        Config.load_file(path)


def test_config_round_trip(tmp_path):
    path = tmp_path / "config.yaml"
    cfg = Config(offline=True, system_prompt="Be brief. 短く。", sampling={"temperature": 0.2, "stop": ["</s>"]},
                 models={"qwen": {"load": {"n_ctx": 8192}}})
    cfg.save(path)
    back = Config.load_file(path)
    assert back.offline and back.system_prompt == "Be brief. 短く。"
    assert back.sampling_for("qwen").stop == ("</s>",)
    assert back.load_options_for("qwen").n_ctx == 8192


def test_compose_keeps_lines_and_raises_the_callers_error(tmp_path):
    root = compose("a: 1\nb:\n  - x\n  - 2001-01-01\n", tmp_path / "f.yaml", CatalogError)
    assert root.value["b"].line == 3 and root.value["b"].value[1].line == 4
    assert root.plain()["a"] == 1
    with pytest.raises(CatalogError, match=r"f\.yaml:1: contains a NUL byte"):
        compose("a: \x00", tmp_path / "f.yaml", CatalogError)
    assert "k: v" in dump({"k": "v"})
