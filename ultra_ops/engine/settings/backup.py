"""Backups: `[environments.X.backup]`, how pg_dump writes them, how long they run and which are kept.

[environments.production.backup]
format = "directory"                 # or "custom": one file
jobs = 0                             # parallel dump and restore jobs; 0: one per core
keep = 30                            # the newest 30, unless a retention policy is given:
retention = { daily = 7, weekly = 4, monthly = 6 }   # the newest of each of those days, weeks, months
lock_wait_timeout_s = 60             # pg_dump gives up (naming who holds it) behind a table lock
"""

from __future__ import annotations

from dataclasses import dataclass

from ultra_ops.engine.settings.table import TableReader

BACKUP_FORMATS = ("directory", "custom")
LOCK_WAIT_RANGE_S = (0.1, 3600.0)  # below: a lock any busy table holds for a moment; above: hours again


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the newest backup of each of the last `daily` days, `weekly` weeks, `monthly` months."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 6


@dataclass(frozen=True)
class BackupSettings:
    format: str = "directory"
    jobs: int = 0  # 0: one per core
    compression: int = 1  # fast: pg_dump spends its time compressing, not reading
    keep: int = 20
    max_age_hours: float = 26.0  # the backup freshness sensor alerts past this age
    timeout_s: float = 6 * 3600.0  # the longest a pg_dump or pg_restore may run
    # The longest pg_dump waits for a table's lock (a migration, a VACUUM FULL holding it): past it
    # the backup fails naming the session in the way, rather than waiting out `timeout_s` silently.
    lock_wait_timeout_s: float = 60.0
    retention: RetentionPolicy | None = None  # None: the newest `keep`


def _retention(r: TableReader | None) -> RetentionPolicy | None:
    if r is None:
        return None
    tiers = {
        name: r.positive(name, default, integer=True, at_most=1000)
        for name, default in (("daily", 7), ("weekly", 4), ("monthly", 6))
    }
    r.finish()
    return RetentionPolicy(**tiers)


def _lock_wait(r: TableReader) -> float:
    value = float(r.get("lock_wait_timeout_s", (int, float), 60.0))
    low, high = LOCK_WAIT_RANGE_S
    if not low <= value <= high:  # also refuses nan
        raise r.fail("lock_wait_timeout_s", f"expected {low:g} to {high:g} seconds, got {value:g}")
    return value


def read_backup(r: TableReader | None) -> BackupSettings:
    if r is None:
        return BackupSettings()
    fmt = r.get("format", str, "directory")
    if fmt not in BACKUP_FORMATS:
        raise r.fail("format", f"expected one of {', '.join(BACKUP_FORMATS)}, got {fmt!r}")
    compression = r.positive("compression", 1, integer=True, at_most=9, unit=" (0: none)")
    max_age = r.above_zero("max_age_hours", 26.0, at_most=24 * 366, unit=" hours (a year)")
    settings = BackupSettings(
        format=fmt,
        jobs=r.positive("jobs", 0, integer=True, at_most=256, unit=" (0: one per core)"),
        compression=compression,
        keep=r.positive("keep", 20, integer=True, at_most=10_000, unit=" backups (0: every one)"),
        max_age_hours=max_age,
        timeout_s=r.above_zero("timeout_s", 6 * 3600.0, at_most=7 * 86400, unit=" seconds (a week)"),
        lock_wait_timeout_s=_lock_wait(r),
        retention=_retention(r.sub("retention")),
    )
    r.finish()
    return settings
