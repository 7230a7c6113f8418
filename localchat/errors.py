"""Typed errors. Each carries a message a user can act on; `hint` says what to do next."""

from __future__ import annotations


class LocalchatError(Exception):
    """Base of every error localchat reports to a user (CLI: one line on stderr; TUI: a notification)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class CatalogError(LocalchatError):
    """A catalog file (models.yaml) is malformed; the message names file:line."""


class UnknownModelError(LocalchatError):
    """A model id that no catalog entry has; the hint lists the closest ids."""


class NotInstalledError(LocalchatError):
    """The entry exists but its files are not installed."""


class ConfigError(LocalchatError):
    """config.yaml or a setting value is invalid."""


class SourceError(LocalchatError):
    """A model source could not provide the files (404, auth, no such wheel, ...)."""


class DownloadError(SourceError):
    """A transfer failed after retries; what was fetched is kept for resuming."""


class IntegrityError(SourceError):
    """A file's sha256 does not match what it must be; nothing was installed."""


class OfflineError(LocalchatError):
    """An action needed the network while offline mode is on."""


class DiskFullError(LocalchatError):
    """Not enough free disk space for a download or install."""


class Cancelled(LocalchatError):
    """The user cancelled a long operation (download, generation)."""


class GGUFError(LocalchatError):
    """A file is not a valid GGUF, or is truncated/hostile; refused before llama.cpp sees it."""


class TemplateError(LocalchatError):
    """A chat template could not be rendered safely."""


class EngineError(LocalchatError):
    """The model worker reported an error."""


class EngineRequestError(EngineError):
    """The engine refused a request's input (an embedding input with no tokens); the message says which."""


class ModelLoadError(EngineError):
    """llama.cpp could not load the model."""


class WorkerCrashed(EngineError):
    """The worker process died; the message carries the last lines of its log."""

    log_path: object = None  # the worker's log file (a Path)
    log_lines: list[str] = []  # noqa: RUF012 - replaced per instance, never mutated
    returncode: int | None = None


class ContextOverflowError(LocalchatError):
    """A single message does not fit the context window even with all older turns dropped."""


class StoreError(LocalchatError):
    """The conversation database is unreadable, corrupt or locked."""


class ConversationNotFound(StoreError):
    """A conversation or message id that the database does not hold."""


class ConversationFormatError(StoreError):
    """A file given to `history import` is not a conversation we can read; the message says where and why."""


class BundleError(LocalchatError):
    """A model bundle (.lcb) is not one, is truncated, unsafe (path traversal, links) or contradicts itself;
    nothing was imported."""


class EngineContextOverflow(EngineError, ContextOverflowError):
    """The engine was given more tokens than its loaded context window holds."""
