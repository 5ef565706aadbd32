"""Who hears of a new backup: whoever runs the code that takes it (a Dagster step records it as a
materialization of the backups asset), however deep in a deploy or a restore it was taken."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ultra_ops.engine.backups.store import BackupInfo

Listener = Callable[["BackupInfo"], None]

_listeners: ContextVar[tuple[Listener, ...]] = ContextVar("backup_listeners", default=())


@contextmanager
def backups_heard_by(listener: Listener) -> Iterator[None]:
    """Call `listener(info)` for every backup completed in this context (this thread)."""
    token = _listeners.set((*_listeners.get(), listener))
    try:
        yield
    finally:
        _listeners.reset(token)


def announce(info: BackupInfo) -> None:
    """Tell the listeners of a backup now complete (renamed into place)."""
    for listener in _listeners.get():
        listener(info)
