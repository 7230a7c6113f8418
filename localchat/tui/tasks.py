"""Background work on models (pull, verify, import) as the screens see it. No Textual here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localchat.tui.format import progress_line

VERBS = {"pull": "pulling", "verify": "verifying", "import": "importing"}


@dataclass
class ModelTask:
    model_id: str  # the key: a model id, or "import FILE" for an import
    kind: str  # pull | verify | import
    cancel: Any  # CancelToken
    progress: Any = None  # the latest DownloadProgress
    label: str = ""  # what to call it, when not the model id (the file being imported)

    @property
    def name(self) -> str:
        return self.label or self.model_id

    @property
    def fraction(self) -> float | None:
        return self.progress.fraction if self.progress is not None else None

    @property
    def total(self) -> int | None:
        return self.progress.total if self.progress is not None else None

    @property
    def done(self) -> int:
        return self.progress.done if self.progress is not None else 0

    def summary(self) -> str:
        """Short, for the status bar: "pulling qwen2.5-0.5b-instruct 45%"."""
        pct = f" {self.fraction * 100:.0f}%" if self.fraction is not None else ""
        return f"{VERBS.get(self.kind, self.kind)} {self.name}{pct}"

    def detail(self) -> str:
        """One line for the progress panel."""
        if self.progress is None:
            return f"{VERBS.get(self.kind, self.kind)} {self.name}: starting…"
        return f"{self.name}: {progress_line(self.progress)}"
