"""The context-manager and finalizer behaviour every engine and generation shares, written once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from typing_extensions import Self


class ClosingEngine(ABC):
    """`with engine:` closes it at the end."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class CancellingGeneration(ABC):
    """`with generation:` and dropping a generation both cancel it, so the next one need not wait for an
    abandoned reply. cancel() must be idempotent and safe from any thread and from __del__."""

    @abstractmethod
    def cancel(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()

    def __del__(self) -> None:
        try:
            self.cancel()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
