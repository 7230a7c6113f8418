"""config.yaml: user preferences (offline mode, defaults for loading and sampling, per-model overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from localchat.errors import ConfigError
from localchat.fsutil import atomic_write_text
from localchat.types import LoadOptions, SamplingParams

_TOP_KEYS = {"offline", "default_model", "system_prompt", "sampling", "load", "models", "theme", "thinking",
             "show_thinking"}
_MODEL_KEYS = {"sampling", "load", "system_prompt", "thinking"}
THINKING = ("default", "on", "off")  # a reasoning model thinks as its template's default, always, or never


@dataclass
class Config:
    offline: bool = False
    default_model: str | None = None
    system_prompt: str | None = None
    theme: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # global overrides of SamplingParams
    load: dict[str, Any] = field(default_factory=dict)  # global overrides of LoadOptions
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # model id -> {sampling, load, system_prompt}
    thinking: str = "default"  # reasoning models: default | on | off (per model too); the budget is in sampling
    show_thinking: bool = False  # `localchat run` prints the thought (on stderr)

    @classmethod
    def load_file(cls, path: Path) -> "Config":
        if not path.exists():
            return cls()
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: invalid YAML", hint="fix or delete the file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the configuration ({exc})") from None
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the configuration must be a mapping of settings")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}",
                              hint="known: " + ", ".join(sorted(_TOP_KEYS)))
        cfg = cls(
            offline=bool(data.get("offline", False)),
            default_model=data.get("default_model"),
            system_prompt=data.get("system_prompt"),
            theme=data.get("theme"),
            sampling=dict(data.get("sampling") or {}),
            load=dict(data.get("load") or {}),
            models={str(k): dict(v or {}) for k, v in (data.get("models") or {}).items()},
            thinking=_thinking(data.get("thinking", "default"), f"{path}: thinking"),
            show_thinking=bool(data.get("show_thinking", False)),
        )
        cfg._validate(str(path))
        return cfg

    def _validate(self, where: str) -> None:
        _check_keys(self.sampling, SamplingParams, f"{where}: sampling")
        _check_keys(self.load, LoadOptions, f"{where}: load")
        for model_id, over in self.models.items():
            unknown = set(over) - _MODEL_KEYS
            if unknown:
                raise ConfigError(f"{where}: models.{model_id}: unknown key(s) {', '.join(sorted(unknown))}")
            _check_keys(over.get("sampling") or {}, SamplingParams, f"{where}: models.{model_id}.sampling")
            _check_keys(over.get("load") or {}, LoadOptions, f"{where}: models.{model_id}.load")
            if "thinking" in over:
                over["thinking"] = _thinking(over["thinking"], f"{where}: models.{model_id}.thinking")

    def save(self, path: Path) -> None:
        import yaml

        data: dict[str, Any] = {"offline": self.offline}
        for key in ("default_model", "system_prompt", "theme"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.thinking != "default":
            data["thinking"] = self.thinking
        if self.show_thinking:
            data["show_thinking"] = True
        for key in ("sampling", "load", "models"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    def sampling_for(self, model_id: str | None, **overrides: Any) -> SamplingParams:
        merged = {**self.sampling, **(self.models.get(model_id or "", {}).get("sampling") or {})}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return _build(SamplingParams, merged, "sampling")

    def load_options_for(self, model_id: str | None, **overrides: Any) -> LoadOptions:
        merged = {**self.load, **(self.models.get(model_id or "", {}).get("load") or {})}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return _build(LoadOptions, merged, "load")

    def thinking_for(self, model_id: str | None) -> str:
        return self.models.get(model_id or "", {}).get("thinking", self.thinking)

    def system_prompt_for(self, model_id: str | None) -> str | None:
        per_model = self.models.get(model_id or "", {})
        return per_model.get("system_prompt", self.system_prompt)


def _thinking(value: Any, where: str) -> str:
    # YAML reads a bare on/off as true/false
    value = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    if value not in THINKING:
        raise ConfigError(f"{where} must be one of {', '.join(THINKING)}, not {value!r}")
    return value


def _check_keys(values: dict, cls: type, where: str) -> None:
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", hint="known: " + ", ".join(sorted(names)))


def _build(cls: type, values: dict, what: str):
    try:
        obj = replace(cls(), **{k: (tuple(v) if k == "stop" else v) for k, v in values.items()})
    except TypeError as exc:
        raise ConfigError(f"invalid {what} settings: {exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj
