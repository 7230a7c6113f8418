"""`localchat` with no command opens the app in a real terminal (a pty), never installing anything in the
terminal first: with nothing installed it opens on the welcome screen."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time


def run_in_pty(args, home, until: bytes, timeout: float = 120.0) -> tuple[bytes, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "localchat", "--home", str(home), *args], stdin=slave,
                            stdout=slave, stderr=slave, env={**os.environ, "TERM": "xterm-256color"},
                            start_new_session=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while until not in seen and time.monotonic() < deadline and proc.poll() is None:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        quit_by = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < quit_by:
            os.write(master, b"\x11")  # ctrl+q (again, should a busy machine have it arrive mid-start-up)
            for _ in range(20):
                if proc.poll() is not None:
                    break
                if select.select([master], [], [], 0.1)[0]:
                    try:
                        seen += os.read(master, 65536)
                    except OSError:
                        break
        code = proc.wait(timeout=10)
        while select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return seen, code


def test_no_model_opens_the_welcome_screen_and_quits_cleanly(localchat_home):
    seen, code = run_in_pty([], localchat_home, b"Welcome to localchat")
    assert b"Welcome to localchat" in seen
    assert b"Traceback" not in seen and b"installing" not in seen
    assert code == 0
    assert not (localchat_home / "data" / "models").exists() or not any((localchat_home / "data" / "models").iterdir())


def test_an_unknown_model_is_a_one_line_error(localchat_home):
    out = subprocess.run([sys.executable, "-m", "localchat", "--home", str(localchat_home), "--model", "qwen-nope"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("localchat: error: unknown model 'qwen-nope'")
