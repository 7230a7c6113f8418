"""The network helpers every client shares: one TLS context, one loopback test (stdlib only)."""

from __future__ import annotations

import functools
import ipaddress
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

from localchat.errors import ConfigError

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def tls_context() -> ssl.SSLContext:
    """Verifying TLS context for downloads and remote engines alike. A private CA (air-gapped mirrors,
    corporate proxies) is given the way requests and curl users expect: REQUESTS_CA_BUNDLE or SSL_CERT_FILE."""
    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or None
    return _context_for(cafile)


@functools.lru_cache(maxsize=4)  # loading a CA bundle costs milliseconds; the environment rarely changes
def _context_for(cafile: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA certificates in {cafile} ({exc})",
                          hint="point REQUESTS_CA_BUNDLE / SSL_CERT_FILE at a readable PEM file, or unset them") from None


def is_loopback_host(host: Any) -> bool:
    """Whether a host (name, IPv4/IPv6 literal, `[::1]`, bytes) is this machine. Names other than the
    loopback ones may resolve anywhere, so they are not."""
    if host is None:  # getaddrinfo(None, port): the local wildcard/loopback, no lookup
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip().rstrip(".").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(name.split("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def is_loopback_url(url: str) -> bool:
    """Whether a URL points at this machine (allowed in offline mode: it is no network call)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return bool(host) and is_loopback_host(host)
