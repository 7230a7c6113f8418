"""`localchat doctor` learns what llama.cpp supports from a worker process; the CLI process itself never
imports llama_cpp (a crash in native code, or its logging, stays out of the command)."""

from __future__ import annotations

import os
import subprocess
import sys

# Runs the real CLI entry point, then reports what it imported (after its own output).
_PROBE = ("import sys\n"
          "from localchat.cli import main\n"
          "rc = main(['doctor'])\n"
          "print('llama_cpp imported:', any(m == 'llama_cpp' or m.startswith('llama_cpp.') for m in sys.modules))\n"
          "sys.exit(rc)\n")


def test_doctor_asks_a_worker_and_never_imports_llama_cpp(localchat_home):
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LOCALCHAT_HOME": str(localchat_home)})
    assert out.returncode == 0, out.stderr
    assert "llama_cpp_python" in out.stdout and "gpu_offload" in out.stdout  # the worker's build_info answered
    assert "devices" in out.stdout or "device " in out.stdout
    assert out.stdout.rstrip().endswith("llama_cpp imported: False")
