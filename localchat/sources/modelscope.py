"""ModelScope source: the only module that imports the ModelScope client (modelscope / modelscope_hub).

The client lists the repository (each file's `Size` and `Sha256`) and builds the download URL; our own
downloader does the transfer, so a partial file is continued across runs and progress and cancel go
through our interface. MODELSCOPE_ENDPOINT and MODELSCOPE_API_TOKEN are read at every call (a fresh
HubConfig), not once per process as the client's default configuration does.
"""

from __future__ import annotations

from localchat.errors import SourceError
from localchat.sources import http
from localchat.sources.base import FetchContext, FetchedFile, require_network
from localchat.sources.search import HubRepo, gguf_files

DEFAULT_REVISION = "master"


def _client():
    from modelscope_hub import HubApi, HubConfig

    config = HubConfig()  # MODELSCOPE_ENDPOINT, MODELSCOPE_API_TOKEN or the saved login, as of now
    return HubApi(config=config), config


class ModelScopeSource:
    kind = "modelscope"

    def fetch(self, entry, spec, ctx: FetchContext) -> list[FetchedFile]:
        require_network(ctx.offline, f"downloading '{entry.id}' from {spec.label()}")
        revision = spec.options.get("revision") or DEFAULT_REVISION
        ctx.meter.start(entry.main_file, "resolve", None)
        remotes = resolve(spec.location, list(entry.files), revision)
        return [http.download(remote, ctx) for remote in remotes]


def resolve(repo: str, names: list[str], revision: str = DEFAULT_REVISION) -> list[http.RemoteFile]:
    api, config = _client()
    listing = {f.path: f for f in _call(repo, config.endpoint,
                                        lambda: api.list_repo_files(repo, "model", revision=revision))}
    headers = {}
    if config.token:  # the hub accepts either; its own client sends both
        headers = {"Authorization": f"Bearer {config.token}", "Cookie": f"m_session_id={config.token}"}
    remotes = []
    for name in names:
        info = listing.get(name)
        if info is None:
            raise SourceError(f"{repo} has no file {name} (revision {revision}) on {config.endpoint}",
                              hint=f"`localchat search {repo.split('/')[-1]}` lists its GGUF files")
        url = api.legacy.get_download_url(repo, "model", name, revision)
        sha = (info.sha256 or "").lower() or None
        identity = f"sha256:{sha}" if sha else f"modelscope:{repo}@{revision}/{name}"
        remotes.append(http.RemoteFile(name, url, info.size or None, sha, headers, identity))
    return remotes


def search_repos(query: str, limit: int = 8) -> list[HubRepo]:
    """Repositories whose search matches `query` and that hold GGUF files (the API has no GGUF filter)."""
    api, config = _client()
    page = _call("", config.endpoint, lambda: api.list_repos("model", search=query, page_size=min(50, limit * 3)))
    repos = []
    for info in page.items:
        repo_id = info.id or f"{info.owner}/{info.name}"
        listing = _call(repo_id, config.endpoint, lambda: api.list_repo_files(repo_id, "model", recursive=False))
        files = gguf_files((f.path, f.size) for f in listing if not f.is_dir)
        if files:
            repos.append(HubRepo("modelscope", repo_id, files, info.downloads))
        if len(repos) >= limit:
            break
    return repos


def _call(repo: str, endpoint: str, fn):
    from modelscope_hub import errors

    try:
        return fn()
    except (errors.NotExistError, errors.NotFoundError):
        raise SourceError(f"repository {repo} was not found on {endpoint}",
                          hint="check the name (`localchat search WORDS`)") from None
    except (errors.AuthenticationError, errors.PermissionDeniedError):
        raise SourceError(f"{repo} on {endpoint} needs a ModelScope access token with access to it",
                          hint="set MODELSCOPE_API_TOKEN (or run `modelscope login`)") from None
    except errors.HubError as exc:  # network, timeouts, 5xx: the client has already retried
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"cannot list {repo or 'models'} on {endpoint}: {first}",
                          hint="check the network, or set MODELSCOPE_ENDPOINT to a mirror you can reach") from None
