"""Retention: keep the newest backups of an environment, delete the rest.

Safety backups (the state a restore replaced) are counted apart: twenty rollbacks must not push
out the backups an operator or a deploy took on purpose.
"""

from __future__ import annotations

import os
import shutil

from ultra_ops.engine.backups.store import SAFETY_LABEL, TMP_PREFIX, list_backups
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
    backups = list_backups(env)
    safety = [b for b in backups if b.label.startswith(SAFETY_LABEL)]
    purposeful = [b for b in backups if not b.label.startswith(SAFETY_LABEL)]
    for info in purposeful[keep:] + safety[keep:]:
        doomed = info.path.with_name(f"{TMP_PREFIX}pruned-{info.id}")
        os.rename(info.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(info.id)
    if removed and log is not None:
        log.info(f"retention: kept the newest {keep} backups (and {keep} safety backups), "
                 f"removed {', '.join(removed)}")
    return removed
