"""A one-line download progress bar for the terminal (stderr), fed by DownloadProgress reports."""

from __future__ import annotations

import shutil
import sys
import time

from localchat.units import human_size


def human_seconds(s: float | None) -> str:
    if s is None:
        return "--:--"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class ProgressBar:
    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_phase = None
        self._last_line = 0.0

    def __call__(self, p) -> None:
        phase_changed = (p.phase, p.file) != self._last_phase
        self._last_phase = (p.phase, p.file)
        if not self.tty:  # logs and pipes: one line per phase, and one every 5 s
            now = time.monotonic()
            if phase_changed or now - self._last_line > 5 or p.phase == "done":
                self._last_line = now
                print(f"{p.phase} {p.file}: {human_size(p.done)} / {human_size(p.total)}", file=self.stream)
            return
        width = shutil.get_terminal_size((100, 20)).columns
        if p.phase == "done":
            line = f"installed {p.file} ({human_size(p.total)})"
        else:
            stats = f" {human_size(p.done)}/{human_size(p.total)} {human_size(p.speed)}/s ETA {human_seconds(p.eta)}"
            label = f"{p.phase} {p.file}"[: max(10, width // 3)]
            bar_width = max(10, width - len(label) - len(stats) - 4)
            frac = p.fraction
            if frac is None:
                pos = int(time.monotonic() * 8) % bar_width
                bar = " " * pos + "<=>" + " " * max(0, bar_width - pos - 3)
                bar = bar[:bar_width]
            else:
                filled = int(bar_width * min(1.0, frac))
                bar = "#" * filled + "-" * (bar_width - filled)
            line = f"{label} [{bar}]{stats}"
        self.stream.write("\r" + line[: width - 1].ljust(width - 1))
        if p.phase == "done":
            self.stream.write("\n")
        self.stream.flush()
