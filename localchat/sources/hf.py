"""Hugging Face source: the only module that imports huggingface_hub.

huggingface_hub resolves each file (HEAD on `/resolve/`: commit, size, and the LFS sha256 in X-Linked-Etag)
and builds the auth headers (HF_TOKEN or the token saved by `hf auth login`); our own downloader does the
transfer so that a partial file survives a kill and is continued. HF_ENDPOINT is read here at every call and
passed to the client explicitly: huggingface_hub itself reads it once, when it is first imported.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from localchat.errors import LocalchatError, OfflineError, SourceError
from localchat.liblog import detach_stderr_handler
from localchat.sources import http
from localchat.sources.base import FetchContext, FetchedFile, require_network
from localchat.sources.search import HubRepo, gguf_files, matches

DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _hub():
    # A private app sends no telemetry (this also stops huggingface_hub fetching its agent registry).
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub
    import huggingface_hub.errors
    import huggingface_hub.utils

    detach_stderr_handler("huggingface_hub")  # its records go where the process routes logging (a log file)
    return huggingface_hub


class HFSource:
    kind = "hf"

    def fetch(self, entry, spec, ctx: FetchContext) -> list[FetchedFile]:
        require_network(ctx.offline, f"downloading '{entry.id}' from {spec.label()}")
        revision = spec.options.get("revision") or "main"
        ctx.meter.start(entry.main_file, "resolve", None)
        remotes = [resolve(spec.location, name, revision, ctx) for name in entry.files]
        return [http.download(remote, ctx) for remote in remotes]


def resolve(repo: str, name: str, revision: str = "main", ctx: FetchContext | None = None) -> http.RemoteFile:
    """Where `name` of `repo` is, how big it is and what it hashes to, pinned to the commit the hub names."""
    hub = _hub()
    ep = endpoint()
    url = hub.hf_hub_url(repo, name, revision=revision, endpoint=ep)
    cancel = ctx.cancel if ctx is not None else None
    where = (repo, name, revision)
    # A hub that cannot be reached at all fails after a few seconds; the transfer itself retries longer.
    policy = replace(http.DEFAULT_POLICY, attempts=min(3, http.DEFAULT_POLICY.attempts))
    meta = http.with_retries(lambda: _call(where, hub.get_hf_file_metadata, url), _transient, cancel, policy)
    sha = (meta.etag or "").strip('"').lower()
    if not _SHA256.match(sha):  # not stored with LFS: the ETag is a git object id, ask for the LFS info
        infos = _call(where, hub.HfApi(endpoint=ep).get_paths_info, repo, [name], revision=revision)
        lfs = next((i.lfs for i in infos if getattr(i, "path", None) == name and getattr(i, "lfs", None)), None)
        sha = lfs.sha256 if lfs is not None else None
    pinned = hub.hf_hub_url(repo, name, revision=meta.commit_hash or revision, endpoint=ep)
    headers = dict(hub.utils.build_hf_headers())  # Authorization when a token is configured
    identity = f"sha256:{sha}" if sha else f"hf:{repo}@{meta.commit_hash}/{name}"
    return http.RemoteFile(name, pinned, meta.size, sha, headers, identity)


def search_repos(query: str, limit: int = 8) -> list[HubRepo]:
    """GGUF repositories on the hub whose name matches every word of `query`, most downloaded first."""
    hub = _hub()
    api = hub.HfApi(endpoint=endpoint())
    words = query.split()
    where = ("", "", "main")
    found = _call(where, lambda: list(api.list_models(search=query, filter="gguf", sort="downloads", limit=limit)))
    if not found and len(words) > 1:  # the hub matches the query as one string; try the rarest word, filter here
        longest = max(words, key=len)
        found = [m for m in _call(where, lambda: list(api.list_models(search=longest, filter="gguf", sort="downloads",
                                                                limit=limit * 10)))
                 if matches(m.id, words)][:limit]
    repos = []
    for model in found:
        tree = _call((model.id, "", "main"), lambda: list(api.list_repo_tree(model.id, recursive=False)))
        files = gguf_files((f.path, getattr(f, "size", 0)) for f in tree if hasattr(f, "size"))
        if files:
            repos.append(HubRepo("hf", model.id, files, getattr(model, "downloads", None)))
    return repos


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, _Unreachable) or (isinstance(exc, _HubStatus) and exc.status in http.RETRYABLE_STATUS)


class _Unreachable(SourceError):
    pass


class _HubStatus(SourceError):
    def __init__(self, message: str, status: int, hint: str = "") -> None:
        super().__init__(message, hint)
        self.status = status


def _call(where: tuple[str, str, str], fn, *args, **kwargs):
    """Call huggingface_hub about (repo, file, revision) and turn what it raises into errors that say what to do."""
    errors = _hub().errors
    ep = endpoint()
    repo, name, revision = where
    try:
        return fn(*args, **kwargs)
    except errors.GatedRepoError:
        raise SourceError(
            f"{repo} on {ep} is a gated repository: it needs an access token of an account that accepted its licence",
            hint=f"accept the licence at {ep}/{repo}, then set HF_TOKEN to a token of that account "
                 "(or run `hf auth login`)") from None
    except errors.RepositoryNotFoundError:
        raise SourceError(f"repository {repo} was not found on {ep}",
                          hint="check the name (`localchat search WORDS`); for a private repository set HF_TOKEN"
                          ) from None
    except errors.RevisionNotFoundError:
        raise SourceError(f"{repo} has no revision '{revision}' on {ep}", hint="fix the source's `revision`") from None
    except errors.EntryNotFoundError:
        raise SourceError(f"{repo} has no file {name} (revision {revision}) on {ep}",
                          hint=f"`localchat search {repo.split('/')[-1]}` lists its GGUF files") from None
    except errors.OfflineModeIsEnabled:
        raise OfflineError("HF_HUB_OFFLINE is set, so huggingface_hub refuses to reach the hub",
                           hint="unset HF_HUB_OFFLINE to download") from None
    except errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
        raise _HubStatus(f"{ep} answered HTTP {status} for {repo}", status,
                         hint="the hub or mirror is having trouble; try again later or use another source") from None
    except LocalchatError:
        raise
    except Exception as exc:  # the client's transport (httpx/requests) failing to connect or time out
        if not _is_transport_error(exc):
            raise
        raise _Unreachable(f"cannot reach {ep}: {exc}",
                           hint="check the network, or set HF_ENDPOINT to a mirror you can reach") from None


def _is_transport_error(exc: BaseException) -> bool:
    root = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError) or root in ("httpx", "httpx2", "httpcore", "requests", "urllib3")
