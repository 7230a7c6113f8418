"""Byte counts for people: one convention everywhere (decimal SI: kB, MB, GB, TB, as disks and hubs state them)."""

from __future__ import annotations

_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def human_size(n: float | None) -> str:
    """`491.4 MB`, `1.1 GB`, `512 B`; `?` when unknown."""
    if n is None:
        return "?"
    for unit, scale in _UNITS:
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
