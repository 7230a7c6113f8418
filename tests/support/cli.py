"""Run the `localchat` command line as a user would: a subprocess with its own home."""

from __future__ import annotations

import os
import subprocess
import sys


def localchat(*args, home, input=None, env=None):
    return subprocess.run([sys.executable, "-m", "localchat", "--home", str(home), *args], capture_output=True,
                          text=True, input=input, timeout=600, env={**os.environ, **(env or {})})


def cli_without_hub_env(args, env_extra, home):
    """`localchat ARGS` with the hub variables of this process dropped and `env_extra` set instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "MODELSCOPE_ENDPOINT")}
    env.update(env_extra, LOCALCHAT_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "localchat", *args], env=env, capture_output=True, text=True,
                          timeout=120)
