"""url source: any HTTP(S) server (an internal artifact store, a plain web server), resumed with Range.

`url: https://host/path/model.gguf` is the file itself; for a split GGUF (several files) each part is
fetched from beside that address (`https://host/path/` + the part's name). The catalog's sha256 is what
the download is checked against; without one, the hash is computed and recorded at install.
"""

from __future__ import annotations

from urllib.parse import quote, urljoin

from localchat.sources import http
from localchat.sources.base import FetchContext, FetchedFile, require_network


class URLSource:
    kind = "url"

    def fetch(self, entry, spec, ctx: FetchContext) -> list[FetchedFile]:
        require_network(ctx.offline, f"downloading '{entry.id}' from {spec.location}")
        fetched = []
        for name in entry.files:
            url = file_url(spec.location, name, several=len(entry.files) > 1)
            expected = entry.sha256.get(name)
            # The address plus the expected hash: a partial file is only continued for the same file.
            identity = f"url:{url}" + (f"#sha256:{expected}" if expected else "")
            fetched.append(http.download(http.RemoteFile(name, url, None, expected, {}, identity), ctx))
        return fetched


def file_url(location: str, name: str, several: bool) -> str:
    if not several and not location.endswith("/"):
        return location
    return urljoin(location, quote(name))
