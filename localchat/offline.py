"""Offline mode, enforced: once on, this process opens no network connection except to loopback.

The guard is a `sys.addaudithook` hook on CPython's socket audit events (connect, sendto, sendmsg and the
name lookups), so it holds for every library in the process: urllib, requests, huggingface_hub, asyncio.
A refused attempt raises OfflineError before any packet leaves. Name lookups are refused too (a DNS
query is itself traffic), except for loopback names. Listening sockets are not touched: a server bound
to a LAN address answers clients but opens nothing itself.

Child processes inherit LOCALCHAT_OFFLINE=1; a localchat process started with it turns the guard on in
`localchat.cli.main` and `Services.open`, and a worker entry point calls `enforce_if_inherited()`.
Audit hooks cannot be removed, so `release()` only disarms it (tests, a settings toggle).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from localchat.errors import OfflineError
from localchat.netutil import is_loopback_host

ENV_VAR = "LOCALCHAT_OFFLINE"
_lock = threading.Lock()
_state: dict[str, Any] = {"hooked": False, "armed": False}


def env_says_offline(environ: dict[str, str] | None = None) -> bool:
    value = (environ if environ is not None else os.environ).get(ENV_VAR, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def enforce_offline() -> None:
    """Turn the guard on for this process (idempotent) and mark child processes offline too."""
    with _lock:
        if not _state["hooked"]:
            sys.addaudithook(_audit)
            _state["hooked"] = True
        if not _state["armed"]:
            _state["env_before"] = os.environ.get(ENV_VAR)
        _state["armed"] = True
    os.environ[ENV_VAR] = "1"


def enforce_if_inherited() -> bool:
    """For processes localchat starts (engine workers): arm the guard when the parent was offline."""
    if env_says_offline():
        enforce_offline()
        return True
    return False


def release() -> None:
    """Disarm the guard (the hook stays installed but lets everything through); children are no longer
    marked offline unless they were before it was armed."""
    with _lock:
        if not _state["armed"]:
            return
        _state["armed"] = False
        before = _state.pop("env_before", None)
    if before is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = before


def is_enforced() -> bool:
    return _state["armed"]


@contextmanager
def offline_guard() -> Iterator[None]:
    """The guard for the length of a block (left armed if it already was)."""
    was = _state["armed"]
    enforce_offline()
    try:
        yield
    finally:
        if not was:
            release()


def _address_allowed(sock: Any, address: Any) -> bool:
    family = getattr(sock, "family", None)
    if family is not None and family not in (socket.AF_INET, socket.AF_INET6):
        return True  # AF_UNIX, AF_NETLINK (local kernel queries), socketpair(): no network
    if isinstance(address, tuple) and address:
        return is_loopback_host(address[0])
    return isinstance(address, (str, bytes)) and family is None  # a unix path on an unknown socket


def _refuse(what: str) -> OfflineError:
    return OfflineError(f"offline mode: refused {what} (only loopback is allowed)",
                        hint="turn offline mode off (drop --offline, or `offline: false` in config.yaml) to use the network")


def _audit(event: str, args: tuple) -> None:
    if not _state["armed"] or not event.startswith("socket."):
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[1]
        if address is not None and not _address_allowed(sock, address):
            raise _refuse(f"a connection to {_describe(address)}")
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
        # An address literal ("0.0.0.0" for a server, "10.0.0.5") needs no lookup; connecting to it is
        # what the connect check above judges. A name needs DNS, which is traffic.
        if not (is_loopback_host(args[0]) or _is_literal(args[0])):
            raise _refuse(f"looking up '{_text(args[0])}'")
    elif event == "socket.gethostbyaddr":
        if not is_loopback_host(args[0]):
            raise _refuse(f"a reverse lookup of {_text(args[0])}")
    elif event == "socket.getnameinfo":
        sockaddr = args[0]
        if isinstance(sockaddr, tuple) and sockaddr and not is_loopback_host(sockaddr[0]):
            raise _refuse(f"a reverse lookup of {_describe(sockaddr)}")


def _is_literal(host: Any) -> bool:
    text = _text(host).strip()
    if text == "":  # getaddrinfo("", port): the local wildcard, no lookup
        return True
    try:
        ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    return True


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _describe(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = _text(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return _text(address)
