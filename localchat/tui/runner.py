"""Background model tasks (pull, verify, import, remove) in thread workers, and their live state for the screens.

Tasks belong to the app, not to a screen: a pull goes on while the user closes the models screen and chats.
Screens that show tasks implement `show_tasks(tasks)`; screens that list models implement `models_changed()`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from localchat.errors import Cancelled, LocalchatError, SourceError
from localchat.tui.events import Failed, ModelsChanged, TaskFinished, TaskProgress
from localchat.tui.format import human_size
from localchat.tui.tasks import ModelTask

if TYPE_CHECKING:
    from localchat.catalog import ModelEntry
    from localchat.registry import InstalledModel
    from localchat.services import Services
    from localchat.sources import DownloadProgress
    from localchat.tui.app import LocalchatApp


class TaskRunner:
    def __init__(self, app: "LocalchatApp") -> None:
        self.app = app
        self.active: dict[str, ModelTask] = {}

    @property
    def services(self) -> Services:
        return self.app.services

    def installed_models(self) -> dict[str, InstalledModel]:
        """Installed models (id -> InstalledModel) whose files are all on disk, in catalog order."""
        registry = self.services.registry
        records = registry.all()
        return {e.id: records[e.id] for e in self.services.catalog if e.id in records and registry.is_installed(e.id)}

    # --- starting ---------------------------------------------------------------------------------

    def pull(self, model_id: str) -> bool:
        from localchat.sources import CancelToken

        if model_id in self.active:
            self.app.notify(f"{model_id} is already being {self.active[model_id].kind}ed", severity="warning")
            return False
        try:
            entry = self.services.entry(model_id)
        except LocalchatError as exc:
            self.app.notify(str(exc), severity="error")
            return False
        task = self._add(ModelTask(model_id, "pull", CancelToken()))
        self.app.run_worker(partial(self._pull, entry, task), thread=True, group="tasks", name=f"pull {model_id}",
                            exit_on_error=False)
        size = f" ({human_size(entry.size)})" if entry.size else ""
        self.app.notify(f"pulling {model_id}{size} in the background", timeout=4)
        return True

    def verify(self, model_id: str) -> bool:
        from localchat.sources import CancelToken

        if model_id in self.active:
            self.app.notify(f"{model_id} is busy ({self.active[model_id].kind})", severity="warning")
            return False
        task = self._add(ModelTask(model_id, "verify", CancelToken()))
        self.app.run_worker(partial(self._verify, task), thread=True, group="tasks", name=f"verify {model_id}",
                            exit_on_error=False)
        return True

    def remove(self, model_id: str) -> None:
        self.app.run_worker(partial(self._remove, model_id), thread=True, group="tasks", name=f"remove {model_id}",
                            exit_on_error=False)

    def import_path(self, path: str) -> bool:
        """Install a local .gguf file, or every model of a bundle (.lcb), in the background."""
        from localchat.sources import CancelToken

        name = Path(path).expanduser().name
        key = f"import {name}"
        if key in self.active:
            self.app.notify(f"{name} is already being imported", severity="warning")
            return False
        task = self._add(ModelTask(key, "import", CancelToken(), label=name))
        self.app.run_worker(partial(self._import, Path(path).expanduser(), task), thread=True, group="tasks",
                            name=key, exit_on_error=False)
        return True

    def cancel(self, model_id: str) -> bool:
        task = self.active.get(model_id)
        if task is None:
            return False
        task.cancel.cancel()
        return True

    def cancel_all(self) -> None:
        for task in self.active.values():
            task.cancel.cancel()

    def _add(self, task: ModelTask) -> ModelTask:
        self.active[task.model_id] = task
        self._changed()
        return task

    # --- in the worker thread ---------------------------------------------------------------------

    def _report(self, model_id: str, progress: DownloadProgress) -> None:
        self.app.post_message(TaskProgress(model_id, progress))

    def _finish(self, key: str, kind: str, work: Callable[[], dict]) -> None:
        """Run a task's work and post how it ended; `work` returns TaskFinished's fields on success."""
        try:
            result = work()
        except Cancelled:
            self.app.post_message(TaskFinished(key, kind, cancelled=True))
        except LocalchatError as exc:
            self.app.post_message(TaskFinished(key, kind, error=str(exc)))
        except Exception as exc:  # a bug: say so, keep the app running
            self.app.log_exception(exc)
            self.app.post_message(TaskFinished(key, kind, error=f"internal error: {exc!r}"))
        else:
            self.app.post_message(TaskFinished(key, kind, **result))

    def _pull(self, entry: ModelEntry, task: ModelTask) -> None:
        def work() -> dict:
            self.services.installer.install(entry, progress=partial(self._report, entry.id), cancel=task.cancel)
            return {}

        self._finish(entry.id, "pull", work)

    def _verify(self, task: ModelTask) -> None:
        model_id = task.model_id

        def work() -> dict:
            report = self.services.installer.verify(model_id, progress=partial(self._report, model_id),
                                                    cancel=task.cancel)
            return {"problems": list(report.problems)}

        self._finish(model_id, "verify", work)

    def _import(self, path: Path, task: ModelTask) -> None:
        key = task.model_id

        def work() -> dict:
            progress = partial(self._report, key)
            if path.suffix.lower() == ".gguf":
                from localchat.sources.adding import import_file

                ids = [import_file(self.services, path, progress=progress, cancel=task.cancel).entry.id]
            elif path.suffix.lower() == ".lcb":
                from localchat.bundle import import_bundle

                ids = [m.id for m in import_bundle(self.services, path, progress=progress, cancel=task.cancel)]
            else:
                raise SourceError(f"{path.name} is neither a .gguf file nor a .lcb bundle",
                                  hint="give the path of a model file (.gguf) or of a bundle (.lcb)")
            self.services.reload_catalog()
            return {"installed": ids}

        self._finish(key, "import", work)

    def _remove(self, model_id: str) -> None:
        try:
            rec = self.services.installer.remove(model_id)
        except LocalchatError as exc:
            self.app.post_message(Failed(f"Could not remove {model_id}", str(exc)))
            return
        except OSError as exc:
            self.app.post_message(Failed(f"Could not remove {model_id}", f"{exc}: check the folder's permissions"))
            return
        self.app.call_from_thread(self.app.notify, f"removed {model_id}, freed {human_size(rec.size)}", timeout=5)
        self.app.post_message(ModelsChanged())

    # --- back on the event loop ---------------------------------------------------------------------

    def progress(self, event: TaskProgress) -> None:
        task = self.active.get(event.model_id)
        if task is not None:
            task.progress = event.progress
            self._changed()

    def finished(self, event: TaskFinished) -> None:
        task = self.active.pop(event.model_id, None)
        self._changed()
        app = self.app
        name = task.name if task is not None else event.model_id
        what = {"pull": "Pull", "verify": "Verify", "import": "Import"}.get(event.kind, event.kind)
        if event.cancelled:
            hint = "; pull it again to resume" if event.kind == "pull" else ""
            app.notify(f"{event.kind} of {name} cancelled{hint}", severity="warning", timeout=6)
        elif event.error:
            app.notify(event.error, title=f"{what} of {name} failed", severity="error", timeout=20)
        elif event.kind == "verify":
            if event.problems:
                app.notify("\n".join(event.problems) + f"\nrun `localchat pull {event.model_id}` after removing it",
                           title=f"{event.model_id} failed verification", severity="error", timeout=20)
            else:
                app.notify(f"{event.model_id}: every file matches its sha256", timeout=5)
        elif event.kind == "import":
            ids = ", ".join(event.installed or [])
            app.notify(f"imported {name}: installed as {ids}" if ids else f"{name} held nothing new", timeout=8)
        else:
            app.notify(f"{event.model_id} is installed", timeout=5)
        for screen in list(app.screen_stack):
            hook = getattr(screen, "task_finished", None)
            if hook is not None:
                hook(event)
        if event.kind in ("pull", "import") and not event.error and not event.cancelled:
            app.post_message(ModelsChanged())
            first = (event.installed or [None])[0] if event.kind == "import" else event.model_id
            workspace = app.workspace
            if first and workspace.engine is None and workspace.loading is None:
                workspace.load(first)

    def _changed(self) -> None:
        tasks = list(self.active.values())
        self.app.chat.status.tasks = "; ".join(t.summary() for t in tasks)
        for screen in self.app.screen_stack:
            show = getattr(screen, "show_tasks", None)
            if show is not None:
                show(tasks)
