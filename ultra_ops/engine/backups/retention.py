"""Retention: which backups an environment keeps, and removing the rest.

The policy keeps the newest backup of each of the last `daily` days, `weekly` ISO weeks and
`monthly` months (`[environments.X.backup] retention = { daily = 7, weekly = 4, monthly = 6 }`), or
without one the newest `keep`. Whatever the policy says, it never removes a pinned backup
(`ultra-ops backups pin`), the newest complete backup, or the backup the running release was
deployed over. Safety backups (the state a restore replaced) are counted apart, the newest `keep`
of them kept: twenty rollbacks must not push out the backups taken on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ultra_ops.engine.backups.store import SAFETY_LABEL, TMP_PREFIX, BackupInfo, get_backup, list_backups
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import Environment

PINS_FILE = ".pins.json"  # hidden in the backups folder: list_backups skips it


@dataclass(frozen=True)
class Decision:
    backup_id: str
    keep: bool
    why: str


def _pins_path(env: Environment) -> Path:
    return env.backups_path / PINS_FILE


def pinned(env: Environment) -> set[str]:
    try:
        return set(json.loads(_pins_path(env).read_text()))
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, TypeError):
        return set()


def pin(env: Environment, backup_id: str, *, keep_forever: bool = True) -> set[str]:
    """Pin (or unpin) a backup: pinned backups are never removed by retention."""
    get_backup(env, backup_id)  # an unknown id is bad input
    pins = pinned(env)
    pins = pins | {backup_id} if keep_forever else pins - {backup_id}
    path = _pins_path(env)
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        json.dump(sorted(pins), f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    return pins


def plan_retention(
    env: Environment, backups: list[BackupInfo], *, protected: set[str] | None = None, keep: int | None = None
) -> list[Decision]:
    """What retention would do with `backups` (newest first), and why, for every backup."""
    pins, protected = pinned(env), protected or set()
    policy = env.backup.retention
    keep = env.backup.keep if keep is None else keep
    safety = [b for b in backups if b.label.startswith(SAFETY_LABEL)]
    purposeful = [b for b in backups if not b.label.startswith(SAFETY_LABEL)]
    reasons: dict[str, str] = {}
    if purposeful:
        reasons[purposeful[0].id] = "the newest backup"
    for b in purposeful:
        if b.id in pins:
            reasons.setdefault(b.id, "pinned")
        if b.id in protected:
            reasons.setdefault(b.id, "the running release was deployed over it")
    if policy is not None:
        for tier, count, period in (
            ("daily", policy.daily, lambda b: b.created_at[:10]),
            ("weekly", policy.weekly, _iso_week),
            ("monthly", policy.monthly, lambda b: b.created_at[:7]),
        ):
            seen: list[str] = []
            for b in purposeful:
                key = period(b)
                if key not in seen:
                    seen.append(key)
                    if len(seen) <= count:
                        reasons.setdefault(b.id, f"the newest of {key} ({tier})")
    elif keep > 0:
        for b in purposeful[:keep]:
            reasons.setdefault(b.id, f"one of the newest {keep}")
    else:
        for b in purposeful:
            reasons.setdefault(b.id, "keep = 0 keeps everything")
    for i, b in enumerate(safety):
        if b.id in pins:
            reasons[b.id] = "pinned"
        elif keep <= 0 or i < keep:
            reasons[b.id] = f"one of the newest {keep} safety backups" if keep > 0 else "keep = 0 keeps everything"
    return [
        Decision(
            b.id,
            b.id in reasons,
            reasons.get(b.id)
            or ("an older safety backup" if b.label.startswith(SAFETY_LABEL) else "outside the retention policy"),
        )
        for b in backups
    ]


def _iso_week(b: BackupInfo) -> str:
    year, week, _ = datetime.fromisoformat(b.created_at).isocalendar()
    return f"{year}-W{week:02d}"


def prune_backups(
    env: Environment,
    *,
    keep: int | None = None,
    protected: set[str] | None = None,
    dry_run: bool = False,
    log: Log | None = None,
) -> list[Decision]:
    """Remove what the retention policy does not keep; returns every decision (dry_run: removes
    nothing). Call it under the environment's lock, so no running restore loses the backup it
    reads. A backup is renamed to a hidden name first: a crash mid-delete never leaves a half
    backup listed."""
    decisions = plan_retention(env, list_backups(env), protected=protected, keep=keep)
    doomed = [d for d in decisions if not d.keep]
    if not dry_run:
        for decision in doomed:
            path = env.backups_path / decision.backup_id
            gone = path.with_name(f"{TMP_PREFIX}pruned-{decision.backup_id}")
            os.rename(path, gone)
            shutil.rmtree(gone, ignore_errors=True)
    if doomed and log is not None:
        verb = "would remove" if dry_run else "removed"
        log.info(f"retention {verb} " + ", ".join(f"{d.backup_id} ({d.why})" for d in doomed))
    return decisions
