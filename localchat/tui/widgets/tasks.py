"""Live progress of background model tasks (pulls, verifies): a label and a progress bar per task."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Label, ProgressBar

from localchat.tui.tasks import ModelTask


class TaskRow(Horizontal):
    DEFAULT_CSS = """
    TaskRow { height: 1; }
    TaskRow > Label { width: 1fr; }
    TaskRow > ProgressBar { width: 40; }
    """

    def __init__(self, task: ModelTask) -> None:
        super().__init__(id=f"task-{_dom_id(task.model_id)}")
        self.model_id = task.model_id
        self.model_task = task

    def compose(self) -> ComposeResult:
        yield Label(self.model_task.detail())
        yield ProgressBar(total=self.model_task.total, show_eta=False)

    def on_mount(self) -> None:
        self.show(self.model_task)

    def show(self, task: ModelTask) -> None:
        self.model_task = task
        try:
            label, bar = self.query_one(Label), self.query_one(ProgressBar)
        except NoMatches:  # not composed yet: compose() shows the latest task
            return
        label.update(task.detail())
        if task.total:
            bar.update(total=task.total, progress=task.done)
        else:
            bar.update(total=None)


class TaskPanel(Vertical):
    """Shows each task it is told about; hides itself when there is none."""

    DEFAULT_CSS = """
    TaskPanel { height: auto; max-height: 8; padding: 0 1; border-top: solid $panel-lighten-2; }
    TaskPanel.-empty { display: none; }
    """

    def on_mount(self) -> None:
        self.set_class(not self.children, "-empty")

    def show_tasks(self, tasks: list[ModelTask]) -> None:
        wanted = {t.model_id: t for t in tasks}
        for row in list(self.query_children(TaskRow)):
            if row.model_id not in wanted:
                row.remove()
        for task in tasks:
            rows = [r for r in self.query_children(TaskRow) if r.model_id == task.model_id]
            if rows:
                rows[0].show(task)
            else:
                self.mount(TaskRow(task))
        self.set_class(not tasks, "-empty")


def _dom_id(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in model_id)
