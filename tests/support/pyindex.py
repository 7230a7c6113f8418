"""A PEP 503 "simple" package index on loopback, with wheels built on the spot: an internal PyPI mirror
for tests (pip itself downloads from it, as it would from a company's artifact server)."""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import re
import threading
import zipfile
from functools import partial
from pathlib import Path


def build_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid pure-Python wheel carrying `files` (path inside the wheel -> bytes)."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: localchat-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel


class LocalIndex:
    """Serves ROOT/simple/<project>/ pages and ROOT/files/<wheel> on 127.0.0.1 until closed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "files").mkdir(parents=True, exist_ok=True)
        self._projects: dict[str, list[Path]] = {}
        self.requests: list[str] = []  # paths requested, for tests that care what pip fetched
        handler_class = type("Handler", (_QuietHandler,), {"log": self.requests})
        handler = partial(handler_class, directory=str(root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/simple/"

    def add(self, name: str, version: str, files: dict[str, bytes]) -> Path:
        wheel = build_wheel(self.root / "files", name, version, files)
        project = re.sub(r"[-_.]+", "-", name).lower()
        self._projects.setdefault(project, []).append(wheel)
        self._write_pages()
        return wheel

    def _write_pages(self) -> None:
        simple = self.root / "simple"
        simple.mkdir(exist_ok=True)
        links = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(self._projects))
        (simple / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
        for project, wheels in self._projects.items():
            (simple / project).mkdir(exist_ok=True)
            anchors = "".join(
                f'<a href="../../files/{html.escape(w.name)}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
                f"{html.escape(w.name)}</a>\n" for w in wheels)
            (simple / project / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{anchors}</body></html>\n")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    log: list[str]

    def log_message(self, format: str, *args) -> None:  # keep test output clean; remember what was asked
        self.log.append(self.path)
