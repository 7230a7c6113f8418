"""Plain text formatting for the screens (sizes, rates, durations, progress lines). No Textual here."""

from __future__ import annotations

from typing import Any

from localchat.units import human_size

PHASES = {
    "resolve": "looking up", "download": "downloading", "extract": "unpacking", "verify": "verifying",
    "install": "installing", "done": "done",
}


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def context_label(n: int | None) -> str:
    if not n:
        return ""
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def progress_line(progress: Any) -> str:
    """One line about a DownloadProgress: what happens to which file, how far, how fast, how long."""
    phase = PHASES.get(progress.phase, progress.phase)
    parts = [f"{phase} {progress.file}"]
    if progress.total:
        parts.append(f"{human_size(progress.done)} / {human_size(progress.total)}")
    elif progress.done:
        parts.append(human_size(progress.done))
    if progress.speed > 0 and progress.phase in ("download", "extract", "verify"):
        parts.append(f"{human_size(int(progress.speed))}/s")
    eta = progress.eta
    if eta is not None and progress.phase == "download":
        parts.append(f"{human_duration(eta)} left")
    return ", ".join(parts)


def sources_label(entry: Any) -> str:
    """Source kinds in the order they are tried (locations are long and machine-specific)."""
    if entry.is_remote:
        return "remote"
    kinds: list[str] = []
    for spec in entry.sources:
        if spec.kind not in kinds:
            kinds.append(spec.kind)
    return ", ".join(kinds)


def one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
