"""config.yaml: user preferences (offline mode, defaults for loading and sampling, per-model overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from localchat.errors import ConfigError
from localchat.fsutil import atomic_write_text
from localchat.types import LoadOptions, SamplingParams
from localchat.yamlio import Node, dump as dump_yaml, read_file as read_yaml

if TYPE_CHECKING:
    from localchat.reasoning import Thinking

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
        """config.yaml as settings; a malformed file or a wrongly typed value raises ConfigError naming
        file:line."""
        if not path.exists():
            return cls()
        root = read_yaml(path, ConfigError, "configuration")
        if root.value is None:
            return cls()
        if not isinstance(root.value, dict):
            raise ConfigError(f"{path}:{root.line}: the configuration must be a mapping of settings")
        m: dict[str, Node] = root.value
        unknown = sorted(set(m) - _TOP_KEYS)
        if unknown:
            raise ConfigError(f"{path}:{m[unknown[0]].line}: unknown setting(s) {', '.join(unknown)}",
                              hint="known: " + ", ".join(sorted(_TOP_KEYS)))
        offline = _typed(m, "offline", bool, path, "true or false")
        models_node = _typed(m, "models", dict, path, "a mapping of model id to settings") or {}
        models: dict[str, dict[str, Any]] = {}
        for model_id, node in models_node.items():
            over = _typed({model_id: node}, model_id, dict, path, "a mapping of settings", f"models.{model_id}") or {}
            unknown = sorted(set(over) - _MODEL_KEYS)
            if unknown:
                raise ConfigError(f"{path}:{over[unknown[0]].line}: models.{model_id}: unknown key(s) "
                                  f"{', '.join(unknown)}", hint="known: " + ", ".join(sorted(_MODEL_KEYS)))
            _typed(over, "system_prompt", str, path, "text", f"models.{model_id}.system_prompt")
            if "thinking" in over:
                over["thinking"].value = _thinking(over["thinking"], path, f"models.{model_id}.thinking")
            for key, kind in (("sampling", SamplingParams), ("load", LoadOptions)):
                _check_section(over, key, kind, path, f"models.{model_id}.{key}")
            models[str(model_id)] = {k: v.plain() for k, v in over.items() if v.value is not None}
        for key, kind in (("sampling", SamplingParams), ("load", LoadOptions)):
            _check_section(m, key, kind, path, key)
        for key in ("default_model", "system_prompt", "theme"):
            _typed(m, key, str, path, "text")
        thinking = _thinking(m["thinking"], path, "thinking") if "thinking" in m else "default"
        show_thinking = _typed(m, "show_thinking", bool, path, "true or false")
        plain = root.plain()
        return cls(
            offline=bool(offline),
            default_model=plain.get("default_model"),
            system_prompt=plain.get("system_prompt"),
            theme=plain.get("theme"),
            sampling=dict(plain.get("sampling") or {}),
            load=dict(plain.get("load") or {}),
            models=models,
            thinking=thinking,
            show_thinking=bool(show_thinking),
        )

    def save(self, path: Path) -> None:
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
        atomic_write_text(path, dump_yaml(data))

    def sampling_for(self, model_id: str | None, **overrides: Any) -> SamplingParams:
        merged = {**self.sampling, **(self.models.get(model_id or "", {}).get("sampling") or {})}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return _build(SamplingParams, merged, "sampling")

    def load_options_for(self, model_id: str | None, **overrides: Any) -> LoadOptions:
        merged = {**self.load, **(self.models.get(model_id or "", {}).get("load") or {})}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return _build(LoadOptions, merged, "load")

    def thinking_for(self, model_id: str | None) -> Thinking:
        return cast("Thinking", self.models.get(model_id or "", {}).get("thinking", self.thinking))

    def system_prompt_for(self, model_id: str | None) -> str | None:
        per_model = self.models.get(model_id or "", {})
        return per_model.get("system_prompt", self.system_prompt)


def _thinking(node: Node, path: Path, name: str) -> str:
    """A thinking setting: default, on or off (YAML reads a bare on/off as true/false); else ConfigError at its line."""
    value = node.value
    value = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    if value not in THINKING:
        raise ConfigError(f"{path}:{node.line}: {name} must be one of {', '.join(THINKING)}, not {node.plain()!r}")
    return str(value)


def _typed(m: dict[str, Node], key: str, kind: type, path: Path, what: str, name: str = "") -> Any:
    """m[key]'s value (None when absent or null), which must be of `kind`; else ConfigError at its line."""
    node = m.get(key)
    if node is None or node.value is None:
        return None
    if not isinstance(node.value, kind):
        raise ConfigError(f"{path}:{node.line}: {name or key} must be {what}, not {node.plain()!r}")
    return node.value


def _check_section(m: dict[str, Node], key: str, cls: type, path: Path, name: str) -> None:
    """A `sampling:` or `load:` mapping: known keys, each value valid on its own (the line of a bad one)."""
    section = _typed(m, key, dict, path, "a mapping of settings", name) or {}
    names = {f.name for f in fields(cls)}
    for field_name, node in section.items():
        if field_name not in names:
            raise ConfigError(f"{path}:{node.line}: {name}: unknown key(s) {field_name}",
                              hint="known: " + ", ".join(sorted(names)))
        try:
            _build(cls, {field_name: node.plain()}, key)
        except ConfigError as exc:
            raise ConfigError(f"{path}:{node.line}: {name}.{field_name}: {exc.message}", hint=exc.hint) from None


def _build(cls: type, values: dict, what: str):
    try:
        obj = replace(cls(), **{k: (tuple(v) if k == "stop" else v) for k, v in values.items()})
    except TypeError as exc:
        raise ConfigError(f"invalid {what} settings: {exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj
