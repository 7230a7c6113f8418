"""Every action as a command palette entry, and every key binding for the help screen (one source of truth)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Iterator

from textual.app import SystemCommand

if TYPE_CHECKING:
    from localchat.tui.app import LocalchatApp

# (title, help, where the action lives, action name)
ACTIONS = [
    ("New chat", "Start a new conversation (the current one stays saved)", "chat", "new_chat"),
    ("Switch model", "Pick another installed model; the conversation continues on it", "app", "switch_model"),
    ("Stop reply", "Stop the reply that is streaming (what was said is kept)", "chat", "stop"),
    ("Regenerate reply", "Answer the last message again", "chat", "regenerate"),
    ("End thought", "A reasoning model stops thinking now and answers", "chat", "end_thought"),
    ("Edit last message", "Edit the last message and send it again", "chat", "edit_last"),
    ("Copy reply", "Copy the last reply to the clipboard", "chat", "copy_reply"),
    ("Copy code block", "Copy a code block of the last reply to the clipboard", "chat", "copy_code"),
    ("Open or fold the last thought", "Show or hide what a reasoning model thought before its last answer",
     "chat", "toggle_thought"),
    ("Thinking: default / on / off", "Switch the loaded reasoning model's thinking (saved for that model)", "chat",
     "cycle_thinking"),
    ("Toggle conversations", "Show or hide the list of saved conversations", "chat", "toggle_sidebar"),
    ("Search conversations", "Search the text of every saved conversation", "chat", "search"),
    ("Models", "The catalog: pull, cancel, delete, verify, switch", "app", "models"),
    ("Import a model file", "Install a local .gguf file or a bundle (.lcb), e.g. from a USB stick", "app",
     "import_model"),
    ("Settings", "System prompt, sampling, context size, GPU layers, flash attention", "app", "settings"),
    ("Help", "Every key binding", "app", "help"),
]


def palette_commands(app: "LocalchatApp") -> Iterator[SystemCommand]:
    for title, help_text, where, action in ACTIONS:
        target = app if where == "app" else app.chat
        yield SystemCommand(title, help_text, partial(target.run_action, action))
    yield from model_commands(app)


def model_commands(app: "LocalchatApp") -> Iterator[SystemCommand]:
    """Per model: switch to it, pull it, cancel its pull, verify or delete it."""
    from localchat.tui.screens.models import ModelsScreen

    try:
        installed = app.tasks.installed_models()
    except Exception:  # noqa: BLE001 - an unreadable registry is reported where models are listed
        installed = {}
    for entry in app.services.catalog:
        model_id = entry.id
        if model_id in app.tasks.active:
            yield SystemCommand(f"Cancel {app.tasks.active[model_id].kind} of {model_id}", "Stop it (a pull resumes "
                                "later where it stopped)", partial(app.tasks.cancel, model_id))
        elif model_id in installed:
            if model_id != app.model_id:
                yield SystemCommand(f"Switch to {model_id}", "Continue this conversation on this model",
                                    partial(app.switch_model, model_id))
                yield SystemCommand(f"Delete {model_id}", "Remove its files from disk (asks first)",
                                    partial(ModelsScreen.ask_delete, app, model_id, installed[model_id].size))
            yield SystemCommand(f"Verify {model_id}", "Re-hash its files against the sha256 recorded at install",
                                partial(app.tasks.verify, model_id))
        elif not entry.is_remote:
            yield SystemCommand(f"Pull {model_id}", f"Download {entry.name} in the background",
                                partial(app.tasks.pull, model_id))


def binding_rows() -> list[tuple[str, str, str]]:
    """(where, keys, what) for every binding of the app, its screens and widgets, plus the input's own keys."""
    from localchat.tui.app import LocalchatApp
    from localchat.tui.screens.chat import ChatScreen
    from localchat.tui.screens.models import ModelsScreen
    from localchat.tui.screens.settings import SettingsScreen
    from localchat.tui.widgets.prompt import NEWLINE_KEYS
    from localchat.tui.widgets.sidebar import ConversationOptions

    rows = [("Everywhere", "ctrl+p", "Command palette: every action, themes, switch to a model")]
    groups = [("Everywhere", LocalchatApp), ("Chat", ChatScreen), ("Conversation list", ConversationOptions),
              ("Models screen", ModelsScreen), ("Settings screen", SettingsScreen)]
    for where, cls in groups:
        for binding in cls.BINDINGS:
            if binding.description:
                rows.append((where, binding.key.replace(",", ", "), binding.description))
    rows += [
        ("Message input", "enter", "Send the message"),
        ("Message input", ", ".join(NEWLINE_KEYS), "New line"),
        ("Message input", "up (empty input)", "Edit the last message"),
        ("Chat", "click a code block", "Copy that code block"),
        ("Chat", "click “copy”", "Copy that message"),
        ("Chat", "click a thought's header", "Open or fold that thought"),
    ]
    return rows
