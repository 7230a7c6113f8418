"""A local model hub for tests: enough of the Hugging Face and ModelScope HTTP APIs for the real
huggingface_hub and modelscope clients, on loopback, with fault injection and a byte count per request.

    with HubServer() as hub:
        hub.add_repo("owner/repo", [path_to_gguf])            # on both hubs
        hub.add_fault("model.gguf", drop_after=100_000)        # next download of it is cut after 100 kB
        os.environ["HF_ENDPOINT"] = hub.url
        ...
        hub.bytes_sent("model.gguf")                            # body bytes served, over all requests

Hugging Face: `HEAD|GET /OWNER/REPO/resolve/REV/FILE` answers 302 to a "CDN" on another host name
(`localhost` instead of `127.0.0.1`), carrying X-Repo-Commit / X-Linked-Etag (the LFS sha256) /
X-Linked-Size as the real hub does; `/api/models` (search), `.../tree/REV`, `.../paths-info/REV`.
ModelScope: `/api/v1/models/OWNER/REPO/repo/files` (with `Sha256`), `/api/v1/models/OWNER/REPO/repo?FilePath=`,
`/openapi/v1/models` (search). Gated repos want `Authorization: Bearer <token>`: none gives 401, a wrong
one 403 (X-Error-Code: GatedRepo on the HF side).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

HF_TOKEN = "hf_test_token_0123456789"
MS_TOKEN = "ms_test_token_0123456789"
MAX_CONNECTIONS = 32  # handler threads at once; more connections wait in the listen backlog
IO_TIMEOUT = 20.0  # an idle or stuck client never holds a thread longer than this


@dataclass
class HostedFile:
    name: str
    path: Path
    size: int
    sha256: str
    git_oid: str


@dataclass
class HostedRepo:
    repo_id: str
    files: dict[str, HostedFile]
    gated: bool
    commit: str
    downloads: int = 0


@dataclass
class Fault:
    """What goes wrong on the next `times` body requests for one file (-1: every one)."""

    drop_after: int | None = None  # close the connection after this many body bytes
    status: int | None = None  # answer this status (503, 500, ...) with no body
    corrupt_at: int | None = None  # flip the byte at this file offset
    rate: float | None = None  # bytes per second (a slow link)
    retry_after: int | None = None  # Retry-After header with `status`
    times: int = 1


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    sent: int = 0  # body bytes of a file actually written to the socket
    file: str | None = None
    host: str = ""
    at: float = field(default_factory=time.monotonic)


class HubServer:
    def __init__(self, hf_token: str = HF_TOKEN, ms_token: str = MS_TOKEN) -> None:
        self.hf_token = hf_token
        self.ms_token = ms_token
        self.repos: dict[str, HostedRepo] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.cdn_host = "localhost"  # a different host name for LFS blobs, as the real hub's CDN

    # --- content --------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: list[Path], gated: bool = False) -> HostedRepo:
        hosted = {}
        for p in files:
            data_hash, size = _sha256(p)
            git_oid = hashlib.sha1(f"blob {size}\0".encode() + b"(pointer)").hexdigest()
            hosted[p.name] = HostedFile(p.name, Path(p), size, data_hash, git_oid)
        repo = HostedRepo(repo_id, hosted, gated, hashlib.sha1(repo_id.encode()).hexdigest())
        self.repos[repo_id] = repo
        return repo

    def add_fault(self, file: str, **kwargs) -> None:
        with self._lock:
            self.faults.setdefault(file, []).append(Fault(**kwargs))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    # --- what happened ------------------------------------------------------------------------

    def bytes_sent(self, file: str | None = None) -> int:
        with self._settled():
            return sum(r.sent for r in self.log if file is None or r.file == file)

    def requests(self, file: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Requests in the order they arrived, once every request in progress has been answered."""
        with self._settled():
            return [r for r in self.log if (file is None or r.file == file) and (method is None or r.method == method)]

    def body_requests(self, file: str) -> list[RequestRecord]:
        return [r for r in self.requests(file, "GET") if r.status in (200, 206, 416, 500, 502, 503, 504)]

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "start the server first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def file_url(self, repo_id: str, name: str) -> str:
        """A plain URL for the file (what a `url:` source or an internal artifact store would serve)."""
        return f"{self.url}/files/{repo_id}/{quote(name)}"

    def start(self) -> HubServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hubserver", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- used by the handler --------------------------------------------------------------------

    def _take_fault(self, file: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(file)
            if not queue:
                return None
            fault = queue[0]
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    queue.pop(0)
            return fault

    def _begin(self, rec: RequestRecord) -> None:
        with self._lock:
            self.log.append(rec)
            self._inflight += 1

    def _end(self) -> None:
        with self._lock:
            self._inflight -= 1
            self._idle.notify_all()

    def _settled(self):
        """The lock, taken when no request is being answered (a client may have its last byte before the
        server thread has counted it)."""
        self._idle.acquire()
        self._idle.wait_for(lambda: self._inflight == 0, timeout=IO_TIMEOUT)
        self._idle.release()
        return self._lock


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64
    hub: HubServer

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(timeout=IO_TIMEOUT):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_BLOB = re.compile(r"^/blobs/(?P<sha>[0-9a-f]{64})$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$")
_PATHS_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)$")
_MODEL_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")
_MS_FILES = re.compile(r"^/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo/files$")
_MS_FILE = re.compile(r"^/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo$")
_PLAIN = re.compile(r"^/files/(?P<repo>[^/]+/[^/]+)/(?P<file>[^/]+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT
    server: _Server

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self._dispatch(head=False, form=parse_qs(body))

    # --- routing ------------------------------------------------------------------------------

    def _dispatch(self, head: bool, form: dict | None = None) -> None:
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        self.rec = RequestRecord(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                 host=self.headers.get("Host", ""))
        self.hub._begin(self.rec)
        try:
            if m := _RESOLVE.match(path):
                self._hf_resolve(m["repo"], m["rev"], m["file"])
            elif m := _BLOB.match(path):
                self._blob(m["sha"], head)
            elif path == "/api/models":
                self._hf_search(query)
            elif m := _TREE.match(path):
                self._hf_tree(m["repo"])
            elif m := _PATHS_INFO.match(path):
                self._hf_paths_info(m["repo"], (form or {}).get("paths", []))
            elif m := _MS_FILES.match(path):
                self._ms_files(m["repo"])
            elif m := _MS_FILE.match(path):
                self._ms_file(m["repo"], (query.get("FilePath") or [""])[0], head)
            elif path == "/openapi/v1/models":
                self._ms_search(query)
            elif m := _PLAIN.match(path):
                repo = self.hub.repos.get(m["repo"])
                hosted = repo.files.get(m["file"]) if repo else None
                self.rec.file = m["file"]
                if hosted is None:
                    self._json({"error": "not found"}, 404)
                else:
                    self._serve_file(hosted, head, etag=f'"{hosted.sha256}"')
            elif m := _MODEL_INFO.match(path):
                self._hf_model_info(m["repo"])
            else:
                self._json({"error": f"no route for {path}"}, 404)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.hub._end()

    # --- auth ---------------------------------------------------------------------------------

    def _bearer(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        cookie = self.headers.get("Cookie") or ""
        m = re.search(r"m_session_id=([^;]+)", cookie)
        return m.group(1) if m else None

    def _hf_repo(self, repo_id: str) -> HostedRepo | None:
        """The repo, or None after answering the error the real hub gives."""
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._json({"error": "Repository not found"}, 401 if self._bearer() is None else 404,
                       {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return None
        if repo.gated:
            token = self._bearer()
            if token != self.hub.hf_token:
                msg = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
                self._json({"error": msg}, 401 if token is None else 403,
                           {"X-Error-Code": "GatedRepo", "X-Error-Message": msg})
                return None
        return repo

    def _ms_repo(self, repo_id: str) -> HostedRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._json({"Code": 10010205001, "Message": f"model {repo_id} not found", "Success": False}, 404)
            return None
        if repo.gated and self._bearer() != self.hub.ms_token:
            status = 401 if self._bearer() is None else 403
            self._json({"Code": 10010201001 if status == 401 else 10010203001,
                        "Message": "login required" if status == 401 else "no permission", "Success": False}, status)
            return None
        return repo

    # --- Hugging Face ---------------------------------------------------------------------------

    def _hf_resolve(self, repo_id: str, rev: str, name: str) -> None:
        repo = self._hf_repo(repo_id)
        if repo is None:
            return
        if rev not in ("main", repo.commit):
            self._json({"error": "Revision not found"}, 404, {"X-Error-Code": "RevisionNotFound"})
            return
        hosted = repo.files.get(name)
        self.rec.file = name
        if hosted is None:
            self._json({"error": "Entry not found"}, 404,
                       {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit})
            return
        location = f"http://{self.hub.cdn_host}:{self.server.server_address[1]}/blobs/{hosted.sha256}"
        self._empty(302, {
            "Location": location,
            "X-Repo-Commit": repo.commit,
            "X-Linked-Etag": f'"{hosted.sha256}"',
            "X-Linked-Size": str(hosted.size),
            "ETag": f'"{hosted.git_oid}"',
        })

    def _blob(self, sha: str, head: bool) -> None:
        for repo in self.hub.repos.values():
            for hosted in repo.files.values():
                if hosted.sha256 == sha:
                    self.rec.file = hosted.name
                    self._serve_file(hosted, head, etag=f'"{sha}"')
                    return
        self._json({"error": "no such blob"}, 404)

    def _hf_search(self, query: dict) -> None:
        words = [w.lower() for w in (query.get("search") or [""])[0].split()]
        limit = int((query.get("limit") or ["50"])[0])
        out = []
        for repo in self.hub.repos.values():
            if all(w in repo.repo_id.lower() for w in words):
                out.append({"_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id,
                            "downloads": repo.downloads, "likes": 0, "private": False, "gated": repo.gated,
                            "tags": ["gguf"], "library_name": "gguf"})
        self._json(out[:limit])

    def _hf_entry(self, hosted: HostedFile) -> dict:
        return {"type": "file", "oid": hosted.git_oid, "size": hosted.size, "path": hosted.name,
                "lfs": {"oid": hosted.sha256, "size": hosted.size, "pointerSize": 134}}

    def _hf_tree(self, repo_id: str) -> None:
        repo = self._hf_repo(repo_id)
        if repo is not None:
            self._json([self._hf_entry(h) for h in repo.files.values()])

    def _hf_paths_info(self, repo_id: str, paths: list[str]) -> None:
        repo = self._hf_repo(repo_id)
        if repo is not None:
            self._json([self._hf_entry(repo.files[p]) for p in paths if p in repo.files])

    def _hf_model_info(self, repo_id: str) -> None:
        repo = self._hf_repo(repo_id)
        if repo is not None:
            self._json({"_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
                        "private": False, "gated": repo.gated, "tags": ["gguf"], "downloads": repo.downloads,
                        "siblings": [{"rfilename": n, "size": h.size} for n, h in repo.files.items()]})

    # --- ModelScope -----------------------------------------------------------------------------

    def _ms_files(self, repo_id: str) -> None:
        repo = self._ms_repo(repo_id)
        if repo is None:
            return
        files = [{"Name": h.name, "Path": h.name, "Size": h.size, "Sha256": h.sha256, "Type": "blob",
                  "Revision": repo.commit, "IsLFS": True, "CommittedDate": 1700000000}
                 for h in repo.files.values()]
        self._json({"Code": 200, "Data": {"Files": files}, "Message": "success", "Success": True})

    def _ms_file(self, repo_id: str, name: str, head: bool) -> None:
        repo = self._ms_repo(repo_id)
        if repo is None:
            return
        self.rec.file = name
        hosted = repo.files.get(name)
        if hosted is None:
            self._json({"Code": 10010205001, "Message": f"file {name} not found", "Success": False}, 404)
            return
        self._serve_file(hosted, head, etag=f'"{hosted.sha256}"')

    def _ms_search(self, query: dict) -> None:
        words = [w.lower() for w in (query.get("search") or [""])[0].split()]
        size = int((query.get("page_size") or ["10"])[0])
        items = []
        for repo in self.hub.repos.values():
            if all(w in repo.repo_id.lower() for w in words):
                owner, name = repo.repo_id.split("/")
                items.append({"id": repo.repo_id, "owner": owner, "name": name, "downloads": repo.downloads,
                              "visibility": "public", "tags": ["gguf"]})
        self._json({"success": True, "data": {"models": items[:size], "total_count": len(items),
                                              "page_number": 1, "page_size": size}})

    # --- bodies ---------------------------------------------------------------------------------

    def _serve_file(self, hosted: HostedFile, head: bool, etag: str) -> None:
        fault = None if head else self.hub._take_fault(hosted.name)
        if fault is not None and fault.status:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            self._json({"error": "injected"}, fault.status, extra)
            return
        size = hosted.size
        start, end = 0, size - 1
        status = 200
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                   "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"}
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and (if_range is None or if_range == etag):
            m = re.match(r"bytes=(\d+)-(\d*)$", rng.strip())
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                if start >= size:
                    self._empty(416, {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        headers["Content-Length"] = str(length)
        self.rec.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        self.wfile.flush()
        with open(hosted.path, "rb") as f:
            if fault is None:  # in slices, so a transfer the client abandons is still counted
                pos, end_pos = start, start + length
                while pos < end_pos:
                    n = self.connection.sendfile(f, offset=pos, count=min(4 << 20, end_pos - pos))
                    if n == 0:
                        break
                    pos += n
                    self.rec.sent += n
            else:
                self._send_faulty(f, start, length, fault)

    def _send_faulty(self, f, start: int, length: int, fault: Fault) -> None:
        f.seek(start)
        pos, left = start, length
        budget = fault.drop_after if fault.drop_after is not None else length
        began = time.monotonic()
        while left > 0 and budget > 0:
            chunk = bytearray(f.read(min(64 << 10, left, budget)))
            if not chunk:
                break
            if fault.corrupt_at is not None and pos <= fault.corrupt_at < pos + len(chunk):
                chunk[fault.corrupt_at - pos] ^= 0xFF
            if fault.rate:
                chunk = chunk[: max(1, int(fault.rate / 20))]  # about 20 writes a second
                f.seek(pos + len(chunk))
            self.connection.sendall(chunk)
            self.rec.sent += len(chunk)
            pos += len(chunk)
            left -= len(chunk)
            budget -= len(chunk)
            if fault.rate:
                delay = (pos - start) / fault.rate - (time.monotonic() - began)
                if delay > 0:
                    time.sleep(delay)
        if left > 0:  # cut off: the client sees the connection end before Content-Length bytes
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- small answers --------------------------------------------------------------------------

    def _json(self, payload, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self.rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _empty(self, status: int, headers: dict) -> None:
        self.rec.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()
