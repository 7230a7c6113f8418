"""The one place that wires catalog, sources, engine and store together for the TUI, the CLI and the server."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from localchat.catalog import ModelCatalog, ModelEntry
from localchat.config import Config
from localchat.fsutil import atomic_write_text
from localchat.errors import ConfigError, NotInstalledError, OfflineError
from localchat.paths import Paths
from localchat.registry import InstalledModel, InstalledModels
from localchat.types import GpuLayers

if TYPE_CHECKING:  # imported lazily at run time: `localchat --help` must not pay for them
    from localchat.engine.api import ChatTemplate, Engine
    from localchat.sources import CancelToken, DownloadProgress, Installer
    from localchat.store import ConversationStore

# What state.json holds (today only "last_model").
StateValue = str | int | float | bool | None

DEFAULT_MODEL = "smollm2-135m-instruct"


class Services:
    """Built once per process (CLI command, TUI, server) and handed to whatever needs it."""

    def __init__(self, paths: Paths, config: Config, offline: bool = False) -> None:
        self.paths = paths
        self.config = config
        self.offline = offline

    @classmethod
    def open(cls, home: str | Path | None = None, offline: bool | None = None) -> "Services":
        """Offline mode (the argument, else config.yaml, or LOCALCHAT_OFFLINE=1 inherited from a parent)
        is enforced here for the whole process: no connection except to loopback from then on."""
        from localchat.offline import enforce_offline, env_says_offline

        paths = Paths.from_env(home).ensure()
        config = Config.load_file(paths.config_file)
        offline = (config.offline if offline is None else offline) or env_says_offline()
        if offline:
            enforce_offline()
        return cls(paths, config, offline=offline)

    # --- models -------------------------------------------------------------------------------

    @cached_property
    def catalog(self) -> ModelCatalog:
        return ModelCatalog.load(self.paths.user_catalog)

    def reload_catalog(self) -> ModelCatalog:
        """Forget the cached catalog (after the user catalog changed) and load it again."""
        self.__dict__.pop("catalog", None)
        return self.catalog

    @cached_property
    def registry(self) -> InstalledModels:
        return InstalledModels(self.paths.registry_path, self.paths.models_dir)

    @cached_property
    def installer(self) -> Installer:
        from localchat.sources import Installer

        return Installer(self.registry, self.paths.downloads_dir, offline=self.offline)

    def entry(self, model_id: str) -> ModelEntry:
        return self.catalog.get(model_id)

    def installed(self, model_id: str) -> InstalledModel:
        entry = self.entry(model_id)
        rec = self.registry.get(entry.id)
        if rec is None or not self.registry.is_installed(entry.id):
            raise NotInstalledError(f"model '{model_id}' is not installed", hint=f"run `localchat pull {model_id}`")
        return rec

    def installed_ids(self) -> list[str]:
        return [e.id for e in self.catalog if self.registry.is_installed(e.id)]

    def default_model_id(self) -> str | None:
        """The model to open: the one used last, else the configured default, else any installed one."""
        installed = self.installed_ids()
        for candidate in (self.state.get("last_model"), self.config.default_model, DEFAULT_MODEL):
            if candidate and candidate in installed:
                return candidate
        return installed[0] if installed else None

    def ensure_default_model(self, progress: Callable[[DownloadProgress], None] | None = None,
                             cancel: CancelToken | None = None) -> str:
        """Install the built-in default model if nothing is installed yet; returns the model id to use."""
        model_id = self.default_model_id()
        if model_id is not None:
            return model_id
        self.installer.install(self.entry(DEFAULT_MODEL), progress=progress, cancel=cancel)
        return DEFAULT_MODEL

    @cached_property
    def store(self) -> ConversationStore:
        from localchat.store import ConversationStore

        return ConversationStore.open(self.paths.db_path)

    # --- engine -------------------------------------------------------------------------------

    def start_engine(self, model_id: str, n_ctx: int | None = None, n_gpu_layers: GpuLayers | None = None,
                     parallel: int | Literal["auto"] = 1) -> Engine:
        """Start a worker with `model_id` loaded, using the configured load options (the arguments override them).
        `parallel` > 1 or "auto": replies decoded together (the server); the TUI and `run` keep 1, the
        single-stream path."""
        from localchat.engine.client import EngineClient

        entry = self.entry(model_id)
        if entry.is_remote:
            remote = self._start_remote(entry, n_ctx)
            self.remember("last_model", model_id)
            return remote
        rec = self.installed(model_id)
        options = self.config.load_options_for(model_id, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, parallel=parallel)
        if entry.context and options.n_ctx > entry.context:
            options = replace(options, n_ctx=entry.context)
        client = EngineClient.start(rec.path, options, self.paths.log_dir)
        self.remember("last_model", model_id)
        return client

    def _start_remote(self, entry: ModelEntry, n_ctx: int | None) -> Engine:
        """A client for a catalog entry with an `endpoint` (an OpenAI-compatible server elsewhere)."""
        import os

        from localchat.engine.remote import RemoteEngineClient
        from localchat.netutil import is_loopback_url

        endpoint = entry.endpoint
        if not endpoint:  # only a remote entry comes here, and the catalog requires its endpoint
            raise ConfigError(f"'{entry.id}' has no endpoint", hint="give it `endpoint:` in models.yaml")
        if self.offline and not is_loopback_url(endpoint):
            raise OfflineError(f"'{entry.id}' is a remote engine at {entry.endpoint}, and offline mode is on",
                               hint="turn offline mode off to use it, or pick a local model")
        key = None
        if entry.api_key_env:
            key = os.environ.get(entry.api_key_env)
            if not key:
                raise ConfigError(f"'{entry.id}' needs an API key in ${entry.api_key_env}, which is not set",
                                  hint=f"export {entry.api_key_env}=... before starting localchat")
        limits = [n for n in (n_ctx, entry.context) if n]
        remote = RemoteEngineClient.start(endpoint, entry.remote_model or entry.id, key,
                                          n_ctx=min(limits) if limits else None, key_env=entry.api_key_env)
        return remote

    def chat_template(self, entry: ModelEntry, gguf_template: str | None, bos: str | None = None,
                      eos: str | None = None) -> tuple[ChatTemplate, list[str]]:
        """The template for `entry` and the warnings its user should see."""
        if entry.is_remote:  # the server applies its own template: the conversation goes as messages
            from localchat.engine.remote import RemoteTemplate

            return RemoteTemplate(), []
        from localchat.templates import choose_template

        template, warnings = choose_template(entry.template, gguf_template, bos, eos)
        return template, warnings

    # --- small persistent state (last model used) ---------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.paths.data_dir / "state.json"

    @cached_property
    def state(self) -> dict[str, StateValue]:
        try:
            data = json.loads(self._state_path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def remember(self, key: str, value: StateValue) -> None:
        self.state[key] = value
        atomic_write_text(self._state_path, json.dumps(self.state, indent=2))
