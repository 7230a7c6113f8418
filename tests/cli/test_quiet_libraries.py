"""Third-party libraries never write to the terminal: a failing `localchat pull` shows localchat's one message
on stderr, and the hub client's retry warnings land in the log file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Failing(BaseHTTPRequestHandler):
    """A hub mirror that is down: every request answers 500."""

    def _fail(self) -> None:
        body = b'{"Code": 500, "Message": "internal error", "Success": false}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = _fail

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def failing_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_failing_modelscope_pull_prints_only_localchats_message(failing_hub, tmp_path):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "models.yaml").write_text(
        "- id: down-model\n  files: [down.gguf]\n  sources:\n    - modelscope: owner/down-model\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODELSCOPE_", "TQDM_"))}
    env.update(LOCALCHAT_HOME=str(home), MODELSCOPE_ENDPOINT=failing_hub, MODELSCOPE_DOMAIN="",
               # The client's own retries, kept short: two attempts, one second apart.
               MODELSCOPE_API_MAX_RETRIES="0", MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS="2",
               MODELSCOPE_REPO_TREE_PAGE_RETRY_MAX_DELAY_SECONDS="1")
    result = subprocess.run([sys.executable, "-m", "localchat", "pull", "down-model"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    # Before the message: localchat's own progress line; the message itself: one line per source tried.
    before, sep, message = result.stderr.partition("localchat: error: ")
    assert sep and "localchat: error: " not in message, result.stderr
    assert all(line.startswith("resolve down.gguf") for line in before.splitlines()), result.stderr
    assert all(line.startswith("  ") for line in message.splitlines()[1:]), result.stderr
    assert "WARNING" not in result.stderr and "Traceback" not in result.stderr and "retry in" not in result.stderr
    assert "cannot list owner/down-model" in message
    log = home / "logs" / "libraries.log"
    text = log.read_text(encoding="utf-8")
    assert "WARNING modelscope_hub" in text and "retry in" in text


def test_warnings_and_progress_bars_go_to_the_log(tmp_path):
    code = ("import logging, os, warnings, sys\n"
            "from localchat.liblog import route_library_output\n"
            f"route_library_output({str(tmp_path)!r})\n"
            "warnings.warn('deprecated thing')\n"
            "logging.getLogger('urllib3.connectionpool').warning('Retrying connection')\n"
            "from tqdm import tqdm\n"
            "for _ in tqdm(range(3)): pass\n"
            "print(os.environ['HF_HUB_DISABLE_PROGRESS_BARS'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout == "1\n"
    text = (tmp_path / "libraries.log").read_text(encoding="utf-8")
    assert "UserWarning: deprecated thing" in text and "WARNING urllib3.connectionpool: Retrying" in text
