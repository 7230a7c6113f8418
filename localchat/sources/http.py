"""Resumable HTTP(S) downloads for the hf, modelscope and url sources (standard library only).

The hub clients resolve *what* to fetch (URL, size, sha256, auth); this module does the transfer, because
neither client resumes a partial file across runs the way we need (huggingface_hub writes a uniquely named
temporary file and deletes it on failure) and neither reports progress or honours cancel through our
interface. A download goes to `downloads/<id>/<file>.part`, with `<file>.part.json` saying what it is a
part of; a later run continues it with `Range` (guarded by `If-Range`, or by the size, so a file that
changed on the server starts over instead of being spliced), re-hashing the bytes already on disk.
Hashing and writing run on a helper thread so they overlap the next network read.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from localchat.errors import DiskFullError, DownloadError, LocalchatError, SourceError
from localchat.fsutil import atomic_write_text, require_free_space
from localchat.netutil import tls_context
from localchat.sources.base import CHUNK, CancelToken, FetchContext, FetchedFile, HashingWriter, require_network

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential back-off for dropped connections and 408/429/5xx answers."""

    attempts: int = 6  # tries in a row that bring no new byte before giving up
    base_delay: float = 1.0
    max_delay: float = 30.0
    timeout: float = 60.0  # seconds without a byte (or to connect) before a connection counts as dropped

    def delay(self, failure: int, retry_after: float | None = None) -> float:
        wait = self.base_delay * 2 ** (failure - 1)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(self.max_delay, wait)


DEFAULT_POLICY = RetryPolicy()


@dataclass
class RemoteFile:
    """One file to fetch, as a source resolved it."""

    name: str  # the catalog's file name (the partial file is named after it)
    url: str
    size: int | None = None  # from the hub's listing; None when unknown until the server answers
    sha256: str | None = None  # what the source says the content hashes to (checked by the installer)
    headers: dict[str, str] = field(default_factory=dict)  # auth; dropped on a redirect to another host
    identity: str = ""  # what a partial file must have been started for to be continued (default: url)


def with_retries(call, transient, cancel: CancelToken | None = None, policy: RetryPolicy | None = None):
    """`call()`, tried again with back-off while it fails with an error `transient(error)` accepts."""
    policy = policy or DEFAULT_POLICY
    cancel = cancel or CancelToken()
    failure = 0
    while True:
        try:
            return call()
        except Exception as exc:
            failure += 1
            if not transient(exc) or failure >= policy.attempts:
                raise
            cancel.wait(policy.delay(failure))


def download(remote: RemoteFile, ctx: FetchContext, policy: RetryPolicy | None = None) -> FetchedFile:
    """Fetch `remote` into ctx.work_dir/<name>.part, continuing an earlier partial download of the same file."""
    require_network(ctx.offline, f"downloading {remote.name} from {_host(remote.url)}")
    try:
        with _exclusive(ctx.work_dir / (remote.name + ".part.lock"), remote.name):
            return _Transfer(remote, ctx, policy or DEFAULT_POLICY).run()
    except OSError as exc:  # the partial file or its note on disk (network errors are handled inside)
        raise _disk_error(exc, remote.name, kept=None) from None


@contextmanager
def _exclusive(lock_path: Path, name: str) -> Iterator[None]:
    """One writer per partial file: a second `pull` of the same model must not interleave its bytes."""
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SourceError(f"another localchat process is downloading {name} right now",
                              hint="wait for it to finish (or stop it), then run the command again") from None
        yield


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Restart(Exception):
    """The server's copy is not the one the partial file was started from: begin again from byte 0."""


class _Complete(Exception):
    """The server says there is nothing after our last byte: the partial file is the whole file."""


class _Transfer:
    def __init__(self, remote: RemoteFile, ctx: FetchContext, policy: RetryPolicy) -> None:
        self.remote = remote
        self.ctx = ctx
        self.policy = policy
        self.part = ctx.work_dir / (remote.name + ".part")
        self.meta_path = ctx.work_dir / (remote.name + ".part.json")
        self.identity = remote.identity or remote.url
        self.meta: dict = {}
        self.size = remote.size
        self.hasher = hashlib.sha256()
        self.offset = 0

    # --- the whole transfer -------------------------------------------------------------------

    def run(self) -> FetchedFile:
        self._resume_or_reset()
        failures, last_error, progress_mark = 0, "", self.offset
        while self.size is None or self.offset < self.size:
            self.ctx.cancel.check()
            try:
                self._fetch_once()
                break
            except _Complete:
                break
            except _Restart:
                self._reset()
                failures += 1  # a server that keeps changing its answer still runs out of attempts
                last_error = "the file changed on the server while it was being downloaded"
            except _Retry as exc:
                failures = 1 if self.offset > progress_mark else failures + 1
                progress_mark, last_error = self.offset, str(exc)
                if failures >= self.policy.attempts:
                    break
                self.ctx.cancel.wait(self.policy.delay(failures, exc.retry_after))
                continue
            if failures >= self.policy.attempts:
                break
        if self.size is None or self.offset < self.size:
            kept = f"the {self.offset:,} bytes fetched so far are kept" if self.offset else "nothing was kept"
            raise DownloadError(
                f"downloading {self.remote.name} from {_host(self.remote.url)} failed after "
                f"{self.policy.attempts} attempts ({last_error}); {kept}",
                hint="check the network or the mirror, then run the same command again to resume",
            )
        self.ctx.meter.update(self.remote.name, "download", self.offset, self.size, force=True)
        return FetchedFile(self.remote.name, self.part, self.hasher.hexdigest(), self.offset, self.remote.sha256)

    def _resume_or_reset(self) -> None:
        try:
            self.meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.meta = {}
        have = self.part.stat().st_size if self.part.is_file() else 0
        known = self.meta.get("size")
        same = self.meta.get("identity") == self.identity and (None in (known, self.size) or known == self.size)
        if not same or have == 0 or (self.size is not None and have > self.size):
            self._reset()
            return
        self.size = self.size or self.meta.get("size")
        # Re-hash what is already on disk: the final sha256 covers every byte, old and new.
        self.ctx.meter.start(self.remote.name, "verify", have)
        with open(self.part, "rb") as f:
            while chunk := f.read(CHUNK):
                self.ctx.cancel.check()
                self.hasher.update(chunk)
                self.offset += len(chunk)
                self.ctx.meter.update(self.remote.name, "verify", self.offset, have)

    def _reset(self) -> None:
        self.part.unlink(missing_ok=True)
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.meta = {"identity": self.identity, "url": self.remote.url, "size": self.remote.size}
        self.size = self.remote.size
        self._save_meta()

    def _save_meta(self) -> None:
        atomic_write_text(self.meta_path, json.dumps(self.meta))

    # --- one request --------------------------------------------------------------------------

    def _fetch_once(self) -> None:
        resp = self._open()
        try:
            total = self._check_response(resp)
            if self.size is None and total is not None:
                self.size = total
                self.meta["size"] = total
            self._check_space()
            self._remember_validators(resp)
            self._stream(resp)
        finally:
            resp.close()
        if self.size is not None and self.offset < self.size:
            raise _Retry(f"the connection ended after {self.offset:,} of {self.size:,} bytes")
        if self.size is None:
            self.size = self.offset  # no length announced: the end of the body is the end of the file

    def _open(self) -> HTTPResponse:
        headers = dict(self.remote.headers)
        headers.setdefault("User-Agent", "localchat")
        headers["Accept-Encoding"] = "identity"  # the byte offsets must be those of the file itself
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            validator = self.meta.get("etag") or self.meta.get("last_modified")
            if validator and not validator.startswith("W/"):
                headers["If-Range"] = validator
        request = urllib.request.Request(self.remote.url, headers=headers)
        try:
            return _opener().open(request, timeout=self.policy.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            return self._http_error(exc)
        except urllib.error.URLError as exc:
            raise _Retry(f"cannot connect to {_host(self.remote.url)}: {exc.reason}") from None
        except (OSError, HTTPException) as exc:
            raise _Retry(f"connection to {_host(self.remote.url)} failed: {exc}") from None

    def _http_error(self, exc: urllib.error.HTTPError):
        status, where = exc.code, f"{_host(exc.url or self.remote.url)} answered HTTP {exc.code}"
        if status == 416:
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total is not None and total == self.offset and self.size in (None, total):
                self.size = total  # the partial file already holds every byte
                raise _Complete()
            raise _Restart()
        if status in RETRYABLE_STATUS:
            raise _Retry(where, _retry_after(exc.headers.get("Retry-After")))
        if status in (401, 403):
            raise SourceError(f"{where} (not authorised) for {self.remote.name}",
                              hint="the file needs credentials this machine does not have")
        if status in (404, 410):
            raise SourceError(f"{where}: {self.remote.name} is not there", hint="check the source's address")
        raise SourceError(f"{where} for {self.remote.name}")

    def _check_response(self, resp: HTTPResponse) -> int | None:
        """The file's total size as the response states it; raises _Restart when the bytes cannot continue ours."""
        length = _int(resp.headers.get("Content-Length"))
        if resp.status == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range") or "")
            if not m or int(m.group(1)) != self.offset:
                raise _Restart()
            total = int(m.group(3)) if m.group(3) != "*" else None
        elif resp.status == 200:
            if self.offset:  # Range ignored, or If-Range said the file changed: this body is the whole file
                self._reset()
            total = length
        else:
            raise _Retry(f"unexpected HTTP {resp.status} from {_host(self.remote.url)}")
        if total is not None and self.size is not None and total != self.size:
            if self.remote.size is not None and total != self.remote.size:
                raise SourceError(
                    f"{_host(self.remote.url)} serves {self.remote.name} with {total:,} bytes, "
                    f"but its listing says {self.remote.size:,}", hint="the mirror is inconsistent; try another source")
            raise _Restart()  # same address, different file (url sources): start over
        return total

    def _remember_validators(self, resp: HTTPResponse) -> None:
        """At byte 0, note what identifies this version of the file, for If-Range when continuing it."""
        if self.offset == 0:
            self.meta.update(etag=resp.headers.get("ETag"), last_modified=_http_date(resp.headers.get("Last-Modified")))
            self._save_meta()

    def _check_space(self) -> None:
        if self.size is None:
            return
        require_free_space(self.part.parent, self.size - self.offset + (8 << 20), f"to download {self.remote.name}",
                           hint="free some space (`localchat rm ID` removes a model) and run the same command again "
                                "to resume")

    def _stream(self, resp: HTTPResponse) -> None:
        writer = HashingWriter(self.part, self.remote.name, self.size, self.ctx, offset=self.offset, hasher=self.hasher,
                               write=write_chunk)
        cancel = self.ctx.cancel
        try:
            while True:
                cancel.check()
                try:
                    chunk = resp.read1(CHUNK)
                except (OSError, HTTPException) as exc:
                    raise _Retry(f"the connection dropped after {self.offset:,} bytes ({exc})") from None
                if not chunk:
                    break
                writer.put(chunk)
                self.offset += len(chunk)
        finally:
            self.offset = writer.close()  # what is really on disk, even when the network or the disk failed
            if writer.error is not None:
                raise _disk_error(writer.error, self.remote.name, kept=writer.written) from None


def _disk_error(exc: OSError, name: str, kept: int | None) -> LocalchatError:
    if exc.errno in _DISK_FULL:
        what = f": {kept:,} bytes are kept for resuming" if kept else ""
        return DiskFullError(f"the disk filled up while downloading {name}{what}",
                             hint="free some space (`localchat rm ID` removes a model) and run the same command "
                                  "again to resume")
    return LocalchatError(f"cannot write {name} to disk: {exc.strerror or exc}",
                          hint="check the data directory (`localchat doctor`)")


def write_chunk(fd: int, data: memoryview) -> int:
    """One write(2) of the partial file (a seam the tests use to make the disk fill up)."""
    return os.write(fd, data)


# --- urllib plumbing ---------------------------------------------------------------------------


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects; credentials go only to the host they were given for (a CDN gets a signed URL
    that would be refused, or leaked to, with the hub's token)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
            new.remove_header("Cookie")
        return new


def _opener() -> urllib.request.OpenerDirector:
    # ProxyHandler (from the environment: https_proxy, no_proxy, ...) is part of build_opener's defaults.
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=tls_context()), _RedirectHandler())


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _total_from_content_range(value: str | None) -> int | None:
    m = re.match(r"bytes (?:\*|\d+-\d+)/(\d+)", value or "")
    return int(m.group(1)) if m else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _http_date(value: str | None) -> str | None:
    """Keep a Last-Modified value only if it parses (If-Range must carry an exact HTTP date)."""
    if not value:
        return None
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return value
