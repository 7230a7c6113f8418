"""Settings: system prompt, thinking, sampling and load options, for all models or one; saved to config.yaml.

A blank field inherits: a model's setting falls back to the global one, a global one to the built-in default
(shown as the field's placeholder). Sampling and the system prompt apply from the next reply; a changed load
option (context size, GPU layers, flash attention) reloads the model, and the app says so.
"""

from __future__ import annotations

import copy
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, TextArea

from localchat.errors import ConfigError, LocalchatError
from localchat.types import LoadOptions, SamplingParams

GLOBAL = "*"
# (section, key, label, kind, help): kind is float | int | layers | flash
FIELDS = [
    ("sampling", "temperature", "Temperature", "float", "0 = always the most likely token; higher = more varied"),
    ("sampling", "top_p", "Top p", "float", "keep the most likely tokens up to this probability mass (0-1]"),
    ("sampling", "top_k", "Top k", "int", "keep this many most likely tokens (0 = off)"),
    ("sampling", "min_p", "Min p", "float", "drop tokens less likely than this fraction of the best one"),
    ("sampling", "repeat_penalty", "Repeat penalty", "float", "above 1 discourages repeating (1 = off)"),
    ("sampling", "max_tokens", "Max tokens", "int", "longest reply, in tokens"),
    ("load", "n_ctx", "Context size", "int", "tokens the model sees at once (reloads the model)"),
    ("load", "n_gpu_layers", "GPU layers", "layers", "auto, 0 (CPU only), a number, or -1 for all (reloads)"),
    ("load", "flash_attn", "Flash attention", "flash", "auto, on or off (reloads the model)"),
]
LOAD_NAMES = {"n_ctx": "context size", "n_gpu_layers": "GPU layers", "flash_attn": "flash attention"}
THINKING_CHOICES = [("default (the model's own)", "default"), ("on", "on"), ("off", "off")]


def set_thinking(config: Any, model_id: str | None, choice: str | None) -> None:
    """Thinking for one model (None: for all models); `choice` None lets the model inherit the global choice."""
    if model_id is None:
        config.thinking = choice or "default"
        return
    over = dict(config.models.get(model_id, {}))
    if choice is None:
        over.pop("thinking", None)
    else:
        over["thinking"] = choice
    if over:
        config.models[model_id] = over
    else:
        config.models.pop(model_id, None)


class SettingsScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "app.pop_screen", "Close without saving"),
    ]
    DEFAULT_CSS = """
    SettingsScreen VerticalScroll { padding: 0 2; }
    SettingsScreen .row { height: 1; margin-bottom: 1; }
    SettingsScreen .row > Label { width: 18; }
    SettingsScreen .row > Input, SettingsScreen .row > Select { width: 24; }
    SettingsScreen .row > .help { width: 1fr; padding: 0 0 0 2; color: $text-muted; }
    SettingsScreen #system { height: 5; }
    SettingsScreen .section { text-style: bold; margin: 1 0 1 0; }
    SettingsScreen #error { color: $text-error; }
    SettingsScreen .buttons { height: auto; margin: 1 0; }
    SettingsScreen .buttons Button { margin-right: 2; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.scope = GLOBAL

    def compose(self) -> ComposeResult:
        app = self.app
        scopes = [("All models (defaults)", GLOBAL)]
        try:
            installed = list(app.tasks.installed_models())
        except LocalchatError:
            installed = []
        for model_id in dict.fromkeys(([app.model_id] if app.model_id else []) + installed):
            scopes.append((f"Only {model_id}", model_id))
        yield Header(show_clock=False)
        with VerticalScroll():
            with Horizontal(classes="row"):
                yield Label("Applies to")
                yield Select(scopes, value=GLOBAL, allow_blank=False, id="scope", compact=True)
                yield Static("a model's own value wins over the default; blank = inherit", classes="help")
            yield Label("System prompt", classes="section")
            yield TextArea(id="system", soft_wrap=True)
            with Horizontal(classes="row"):
                yield Label("Thinking")
                yield Select(THINKING_CHOICES, id="thinking", prompt="inherit", compact=True)
                yield Static("reasoning models: think before answering, or not (the template's own switch)",
                             classes="help", markup=False)
            yield Label("Sampling and loading", classes="section")
            for _section, key, label, kind, help_text in FIELDS:
                with Horizontal(classes="row"):
                    yield Label(label)
                    if kind == "flash":
                        yield Select([("auto", "auto"), ("on", "on"), ("off", "off")], id=key, prompt="inherit",
                                     compact=True)
                    else:
                        yield Input(id=key, compact=True)
                    yield Static(help_text, classes="help", markup=False)
            yield Static("", id="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Reset to inherited", id="reset")
                yield Button("Close", id="close")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Settings"
        if self.app.model_id:
            self.query_one("#scope", Select).value = self.app.model_id
        self._fill()

    # --- showing --------------------------------------------------------------------------------

    def _overrides(self, config: Any, section: str) -> dict:
        if self.scope == GLOBAL:
            return dict(getattr(config, section))
        return dict(config.models.get(self.scope, {}).get(section) or {})

    def _inherited(self, section: str, key: str) -> Any:
        config = self.app.services.config
        if self.scope == GLOBAL:
            return getattr(SamplingParams() if section == "sampling" else LoadOptions(), key)
        effective = config.sampling_for(None) if section == "sampling" else config.load_options_for(None)
        return getattr(effective, key)

    def _fill(self) -> None:
        config = self.app.services.config
        for section, key, _, kind, _ in FIELDS:
            value = self._overrides(config, section).get(key)
            inherited = self._inherited(section, key)
            if kind == "flash":
                select = self.query_one(f"#{key}", Select)
                select.prompt = f"inherit ({inherited})"
                select.value = value if value in ("auto", "on", "off") else Select.NULL
            else:
                field = self.query_one(f"#{key}", Input)
                field.value = "" if value is None else str(value)
                field.placeholder = str(inherited)
        if self.scope == GLOBAL:
            system, inherited_system = config.system_prompt, None
        else:
            system = config.models.get(self.scope, {}).get("system_prompt")
            inherited_system = config.system_prompt
        thinking = self.query_one("#thinking", Select)
        if self.scope == GLOBAL:
            thinking.value = config.thinking
        else:
            thinking.prompt = f"inherit ({config.thinking})"
            thinking.value = config.models.get(self.scope, {}).get("thinking", Select.NULL)
        area = self.query_one("#system", TextArea)
        area.text = system or ""
        area.placeholder = (f"inherit: {inherited_system}" if inherited_system else
                            "none (e.g. “You are a concise assistant.”)")
        self.query_one("#error", Static).update("")

    @on(Select.Changed, "#scope")
    def _scope_changed(self, event: Select.Changed) -> None:
        if event.value != self.scope:
            self.scope = str(event.value)
            self._fill()

    # --- saving ---------------------------------------------------------------------------------

    def _read_form(self) -> tuple[dict, dict, str | None]:
        values: dict[str, dict] = {"sampling": {}, "load": {}}
        for section, key, label, kind, _ in FIELDS:
            if kind == "flash":
                raw = self.query_one(f"#{key}", Select).value
                if raw is not Select.NULL:
                    values[section][key] = str(raw)
                continue
            raw = self.query_one(f"#{key}", Input).value.strip()
            if raw:
                values[section][key] = _parse(raw, kind, label)
        system = self.query_one("#system", TextArea).text.strip() or None
        return values["sampling"], values["load"], system

    def action_save(self) -> None:
        app = self.app
        services = app.services
        try:
            sampling, load, system = self._read_form()
            candidate = copy.deepcopy(services.config)
            if self.scope == GLOBAL:
                candidate.sampling = _merge(candidate.sampling, "sampling", sampling)
                candidate.load = _merge(candidate.load, "load", load)
                candidate.system_prompt = system
            else:
                over = dict(candidate.models.get(self.scope, {}))
                over["sampling"] = _merge(over.get("sampling") or {}, "sampling", sampling)
                over["load"] = _merge(over.get("load") or {}, "load", load)
                over["system_prompt"] = system
                over = {k: v for k, v in over.items() if v}
                if over:
                    candidate.models[self.scope] = over
                else:
                    candidate.models.pop(self.scope, None)
            thinking = self.query_one("#thinking", Select).value
            set_thinking(candidate, None if self.scope == GLOBAL else self.scope,
                         None if thinking is Select.NULL else str(thinking))
            candidate.sampling_for(None if self.scope == GLOBAL else self.scope)  # validates
            candidate.load_options_for(None if self.scope == GLOBAL else self.scope)
        except ConfigError as exc:
            self.query_one("#error", Static).update(str(exc))
            self.notify(str(exc), title="Settings not saved", severity="error")
            return
        before = services.config.load_options_for(app.model_id) if app.model_id else None
        services.config = candidate
        app.save_config()
        after = candidate.load_options_for(app.model_id) if app.model_id else None
        changed = [LOAD_NAMES[k] for k in LOAD_NAMES if before is not None and getattr(before, k) != getattr(after, k)]
        app.settings_saved(bool(changed), " and ".join(changed))
        self._fill()

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#reset")
    def _reset_pressed(self) -> None:
        for _, key, _, kind, _ in FIELDS:
            if kind == "flash":
                self.query_one(f"#{key}", Select).value = Select.NULL
            else:
                self.query_one(f"#{key}", Input).value = ""
        self.query_one("#system", TextArea).text = ""
        self.query_one("#thinking", Select).value = Select.NULL
        self.notify("fields cleared: Save to make this scope inherit everything", timeout=4)

    @on(Button.Pressed, "#close")
    def _close_pressed(self) -> None:
        self.app.pop_screen()


def _merge(existing: dict, section: str, form: dict) -> dict:
    """The form's values, keeping keys the form does not show (set by hand in config.yaml, e.g. seed)."""
    shown = {key for sec, key, *_ in FIELDS if sec == section}
    return {**{k: v for k, v in existing.items() if k not in shown}, **form}


def _parse(raw: str, kind: str, label: str) -> Any:
    try:
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        if kind == "layers":
            return "auto" if raw.lower() == "auto" else int(raw)
    except ValueError:
        pass
    expected = {"float": "a number", "int": "a whole number", "layers": "auto or a whole number"}[kind]
    raise ConfigError(f"{label} must be {expected}, not “{raw}”",
                      hint="fix the field, or leave it blank to inherit")
