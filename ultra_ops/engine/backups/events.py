"""Who hears of a new backup: whoever runs the code that takes it (a Dagster step records it as a
materialization of the backups asset), however deep in a deploy or a restore it was taken."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ultra_ops.engine import events

if TYPE_CHECKING:
    from ultra_ops.engine.backups.store import BackupInfo

Listener = Callable[["BackupInfo"], None]
TOPIC = "backup"


def backups_heard_by(listener: Listener) -> AbstractContextManager[None]:
    """Call `listener(info)` for every backup completed in this context (this thread)."""
    return events.heard_by(TOPIC, listener)


def announce(info: BackupInfo) -> None:
    """Tell the listeners of a backup now complete (renamed into place)."""
    events.announce(TOPIC, info)
