"""Retention: keep the newest backups of an environment, delete the rest."""

from __future__ import annotations

import os
import shutil

from ultra_ops.engine.backups.store import TMP_PREFIX, list_backups
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import Environment


def prune_backups(env: Environment, *, keep: int | None = None, log: Log | None = None) -> list[str]:
    """Delete the oldest backups beyond `keep` (default: env.backup.keep; 0 keeps everything).
    Call it under the environment's lock, so no running restore loses the backup it reads. Each
    backup is renamed to a hidden name first: a crash mid-delete never leaves a half backup listed."""
    keep = env.backup.keep if keep is None else keep
    if keep <= 0:
        return []
    removed = []
    for info in list_backups(env)[keep:]:
        doomed = info.path.with_name(f"{TMP_PREFIX}pruned-{info.id}")
        os.rename(info.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(info.id)
    if removed and log is not None:
        log.info(f"retention: kept the newest {keep} backups, removed {', '.join(removed)}")
    return removed
