"""Start-up stays light (no heavy import for --help) and `doctor --model` says what offload is in effect and why."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.cli import localchat

HEAVY = ("llama_cpp", "textual", "huggingface_hub", "modelscope", "fastapi", "uvicorn")


def test_help_imports_no_heavy_library(localchat_home):
    code = (
        "import sys, runpy\n"
        "sys.argv = ['localchat', '--home', sys.argv[1], '--help']\n"
        "try:\n"
        "    runpy.run_module('localchat', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        f"print('\\n' + __import__('json').dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(localchat_home)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "doctor" in out.stdout  # it really printed the help
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_doctor_model_prints_the_offload_plan_and_the_notes_in_effect(localchat_home, tiny_model):
    added = localchat("import", str(tiny_model), "--id", "tiny", home=localchat_home)
    assert added.returncode == 0, added.stderr
    out = localchat("doctor", "--model", "tiny", home=localchat_home)
    assert out.returncode == 0, out.stderr
    assert "offload plan   n_gpu_layers auto: 0, this llama.cpp build has no GPU offload" in out.stdout
    assert "in effect" not in out.stdout  # the plan alone loads nothing

    out = localchat("doctor", "--model", "tiny", "--load", home=localchat_home)
    assert out.returncode == 0, out.stderr
    assert "in effect      n_gpu_layers=0/" in out.stdout
    notes = [line for line in out.stdout.splitlines() if line.startswith("note ")]
    assert any("flash attention auto" in n for n in notes)


def test_doctor_load_without_model_says_what_to_add(localchat_home):
    out = localchat("doctor", "--load", home=localchat_home)
    assert out.returncode == 2 and "--load needs --model ID" in out.stderr


def test_doctor_model_says_whether_the_cache_can_be_cut_back_and_what_a_checkpoint_takes(localchat_home, tiny_model,
                                                                                         tmp_path):
    from tests.support.ggufgen import make_tiny_qwen35_gguf

    hybrid = make_tiny_qwen35_gguf(tmp_path / "tiny-qwen35.gguf")
    for path, model_id in ((tiny_model, "tiny"), (hybrid, "hybrid")):
        assert localchat("import", str(path), "--id", model_id, home=localchat_home).returncode == 0
    out = localchat("doctor", "--model", "tiny", home=localchat_home)
    assert out.returncode == 0, out.stderr
    assert "cache cut back yes (attention cache: cut back to any token)" in out.stdout
    assert "checkpoint     none needed; a parked conversation takes " in out.stdout
    out = localchat("doctor", "--model", "hybrid", home=localchat_home)
    assert out.returncode == 0, out.stderr
    assert "cache cut back no (recurrent state: resumed from message-boundary checkpoints)" in out.stdout
    line = next(x for x in out.stdout.splitlines() if x.startswith("checkpoint "))
    assert " MiB at each message boundary" in line and float(line.split()[1]) > 0
