"""`localchat run --json` / `--json-schema FILE` end to end: stdout parses (and validates), also for a model
whose prompt opens a thought (the grammar waits for it to close), and a bad schema is refused up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.models import register_local_model
from tests.support.toolmodels import MODELS, PERSON, make_tool_model


def localchat(*args, home):
    return subprocess.run([sys.executable, "-m", "localchat", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=300, env=os.environ.copy())


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("run-json") / "home"
    models = tmp_path_factory.mktemp("models")
    for model_id in ("person", "thinking-person"):
        register_local_model(home, make_tool_model(models, model_id), model_id, template=MODELS[model_id][1])
    return home


@pytest.mark.parametrize("model_id", ["person", "thinking-person"])
def test_run_json_schema_prints_json_that_validates(home, tmp_path, model_id):
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON))
    out = localchat("run", model_id, "Who?", "--json-schema", str(schema), "--temperature", "0", "--no-save",
                    home=home)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # the model says "age": "old"; the grammar makes it a number
    assert data["name"] == "Ada" and isinstance(data["age"], int)


def test_run_refuses_a_schema_the_grammar_cannot_express(home, tmp_path):
    schema = tmp_path / "bad.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "int"}}}))
    out = localchat("run", "person", "Who?", "--json-schema", str(schema), "--no-save", home=home)
    assert out.returncode != 0 and "properties.n.type" in out.stderr and not out.stdout
