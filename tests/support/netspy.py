"""A network spy for whole processes: a sitecustomize.py that records every socket connect, send-to and
name lookup of every Python process started with it on PYTHONPATH (the CLI, engine workers, pip), so a
test can prove what a session tried to reach. It only watches; refusing is localchat's own guard.

With NETSPY_PROBE set, each `python -m localchat` process also tries one connection to 192.0.2.1
(TEST-NET-1, never routed) as it exits and records what happened: "OfflineError" proves the guard was on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

PROBE_HOST = "192.0.2.1"

SITECUSTOMIZE = r'''
import atexit, json, os, sys

_LOG = os.environ.get("NETSPY_LOG")
if _LOG:
    _NET = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname",
            "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo"}

    def _write(rec):
        rec["pid"] = os.getpid()
        with open(_LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _argv():
        try:
            with open("/proc/self/cmdline", "rb") as f:
                return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            return []

    def _plain(value):
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value if isinstance(value, (str, int)) else repr(value)

    def _hook(event, args):
        if event not in _NET:
            return
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            sock, address = args[0], args[1]
            family = getattr(sock, "family", None)
            host = _plain(address[0]) if isinstance(address, tuple) and address else None
            port = address[1] if isinstance(address, tuple) and len(address) > 1 else None
            _write({"event": event, "family": int(family) if family is not None else None, "host": host,
                    "port": port, "address": None if host is not None else _plain(address)})
        else:
            target = args[0]
            host = _plain(target[0]) if isinstance(target, tuple) and target else _plain(target)
            _write({"event": event, "host": host})

    _write({"event": "start", "argv": _argv()})
    sys.addaudithook(_hook)

    if os.environ.get("NETSPY_PROBE"):
        def _probe():
            if not sys.argv or not sys.argv[0].endswith(os.path.join("localchat", "__main__.py")):
                return
            import socket
            try:
                socket.create_connection(("%s", 9), timeout=0.2).close()
                outcome = "connected"
            except BaseException as exc:
                outcome = type(exc).__name__
            _write({"event": "probe", "outcome": outcome})

        atexit.register(_probe)
''' % PROBE_HOST  # noqa: UP031 - the template is Python full of braces


@dataclass
class SpyRecord:
    pid: int
    event: str
    data: dict


class NetSpy:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.log = folder / "net.jsonl"

    def env(self, probe: bool = True) -> dict[str, str]:
        """Environment for a subprocess to be watched (its children inherit it)."""
        path = [str(self.folder)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "NETSPY_LOG": str(self.log)}
        if probe:
            env["NETSPY_PROBE"] = "1"
        return env

    def records(self) -> list[SpyRecord]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            rec = json.loads(line)
            out.append(SpyRecord(rec.pop("pid"), rec.pop("event"), rec))
        return out

    def processes(self) -> dict[int, list[str]]:
        """pid -> command line of every watched process."""
        return {r.pid: r.data["argv"] for r in self.records() if r.event == "start"}
