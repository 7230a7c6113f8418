"""Where localchat keeps its files. `LOCALCHAT_HOME` (or `--home`) puts everything under one folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "localchat"


@dataclass(frozen=True)
class Paths:
    data_dir: Path  # models/, conversations.db, installed.json
    config_dir: Path  # config.yaml, the user's models.yaml
    log_dir: Path  # engine logs
    cache_dir: Path  # downloads in progress, pip wheels

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> "Paths":
        home = home or os.environ.get("LOCALCHAT_HOME")
        if home:
            root = Path(home).expanduser().resolve()
            return cls(root / "data", root / "config", root / "logs", root / "cache")
        import platformdirs  # imported lazily: `localchat --help` stays instant

        return cls(
            Path(platformdirs.user_data_dir(APP_NAME)),
            Path(platformdirs.user_config_dir(APP_NAME)),
            Path(platformdirs.user_log_dir(APP_NAME)),
            Path(platformdirs.user_cache_dir(APP_NAME)),
        )

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "conversations.db"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "installed.json"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def user_catalog(self) -> Path:
        return self.config_dir / "models.yaml"

    @property
    def downloads_dir(self) -> Path:
        """Partial downloads live here (same filesystem as models/, so the final move is atomic)."""
        return self.data_dir / "downloads"

    def ensure(self) -> "Paths":
        for d in (self.data_dir, self.config_dir, self.log_dir, self.cache_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self
