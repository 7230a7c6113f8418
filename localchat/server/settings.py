"""What `localchat serve` was asked for, checked before anything listens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from localchat.errors import ConfigError
from localchat.netutil import is_loopback_host

DEFAULT_MAX_BODY = 4 * 1024 * 1024  # a 32k-token conversation is ~150 KB of JSON; this leaves ample room


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # Bearer token every request must carry; required off loopback
    default_model: str | None = None  # loaded at start; used when a request names no model
    max_models: int = 1  # models kept loaded at once (least recently used closed first)
    parallel: int | Literal["auto"] = "auto"  # replies each model decodes at once (continuous batching)
    max_body_bytes: int = DEFAULT_MAX_BODY
    ollama_port: int | None = None  # a second port for the same app (11434: where Ollama's clients look)

    def validate(self) -> "ServerSettings":
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range", hint="use 1-65535 (0 picks a free one)")
        if self.ollama_port is not None and not 0 <= self.ollama_port <= 65535:
            raise ConfigError(f"--ollama-port {self.ollama_port} is out of range", hint="Ollama's own is 11434")
        if self.ollama_port is not None and self.ollama_port == self.port != 0:
            raise ConfigError("--ollama-port is the same as --port", hint="leave --ollama-port out: one port serves both APIs")
        if self.max_models < 1:
            raise ConfigError("--max-models must be at least 1")
        if self.max_body_bytes < 1024:
            raise ConfigError("the request size limit must be at least 1 KiB")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("the API key is too short", hint="use at least 8 characters (e.g. `openssl rand -hex 16`)")
        if not is_loopback_host(self.host) and not self.api_key:
            raise ConfigError(
                f"listening on {self.host} makes the models reachable from other machines; that needs an API key",
                hint="add --api-key KEY (or set LOCALCHAT_API_KEY), or bind to 127.0.0.1",
            )
        return self
