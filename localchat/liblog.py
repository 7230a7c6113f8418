"""Third-party libraries never write to the terminal: their logging, warnings and progress bars go to a log
file (a stray WARNING line would corrupt the TUI and bury the CLI's one clear message). Stdlib only."""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOG_NAME = "libraries.log"
# Read by the hub clients when they are first imported: set before that. modelscope_hub draws its bars with
# tqdm directly, so tqdm's own switch is its equivalent of huggingface_hub's.
_QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
# Libraries that attach a stderr handler to their own logger on import when it has none.
_SELF_CONFIGURING = ("modelscope_hub",)


class _LibraryLog(logging.FileHandler):
    """A file opened on the first record (a command that logs nothing creates nothing)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def _open(self):  # noqa: ANN202 - returns the opened stream, as FileHandler._open does
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # a log that cannot be written must not reach the terminal either


def route_library_output(log_dir: Path) -> Path:
    """Send the logging of every library (and warnings.warn) to `log_dir`/libraries.log and turn off the hub
    clients' progress bars. Call once at process start, before the libraries are imported."""
    os.environ.update(_QUIET_ENV)
    path = Path(log_dir) / LOG_NAME
    handler = _LibraryLog(path)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LibraryLog)]:  # main() called twice (tests)
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    for name in _SELF_CONFIGURING:
        lib = logging.getLogger(name)
        lib.handlers = [handler]  # a handler present: the library adds no stderr handler of its own
        lib.propagate = False
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the root -> the file
    return path


def detach_stderr_handler(logger_name: str) -> None:
    """Remove the stderr handler a library attached to its logger on import (huggingface_hub does so
    unconditionally), so its records reach the root logger's handlers instead."""
    lib = logging.getLogger(logger_name)
    for handler in list(lib.handlers):
        if type(handler) is logging.StreamHandler:
            lib.removeHandler(handler)
    lib.propagate = True
