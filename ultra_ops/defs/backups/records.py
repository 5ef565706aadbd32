"""Every backup, however it was taken, as a materialization of the backups asset: its
environment's partition for the day it was taken, with what an operator needs to pick it for a
rollback. The asset's history is the list of backups there were."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    MetadataValue,
    MultiPartitionKey,
    OpExecutionContext,
)

from ultra_ops.engine.backups.events import backups_heard_by
from ultra_ops.engine.backups.store import BackupInfo, backup_day
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.secrets import Log

BACKUPS = AssetKey("backups")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def backup_partition(info: BackupInfo, timezone: str) -> MultiPartitionKey:
    return MultiPartitionKey({"day": backup_day(info, timezone).isoformat(), "environment": info.environment})


def backup_metadata(info: BackupInfo, timezone: str) -> dict[str, Any]:
    duration = info.duration_s or 0.0
    rows = info.tables or {}
    return {
        "backup_id": info.id,
        "kind": info.kind,
        "label": info.label,
        "release_version": info.version or "",
        "created_at": local_time(info.created_at, timezone),
        "format": info.format,
        "size_bytes": info.size_bytes,
        "size": human_bytes(info.size_bytes),
        "duration_s": round(duration, 3),
        "mb_per_s": round(info.size_bytes / 1e6 / duration, 3) if duration > 0 else 0.0,
        "tables": len(rows),
        "rows": sum(rows.values()),
        "row_counts": MetadataValue.json(rows),
        "path": MetadataValue.path(str(info.path)),
    }


def backup_materialization(info: BackupInfo, timezone: str) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=BACKUPS,
        partition=backup_partition(info, timezone),
        description=f"{info.kind} backup {info.id}",
        metadata=backup_metadata(info, timezone),
    )


@contextmanager
def recording_backups(
    context: OpExecutionContext,
    timezone: str,
    log: Log,
    checks: Callable[[BackupInfo], list[AssetCheckEvaluation]] | None = None,
) -> Iterator[None]:
    """Record each backup the step takes (a deploy's, a restore's safety backup, a manual one) in
    the run that took it, with the evaluations of its `checks`. A backup that could not be recorded
    or checked is still a backup: only logged."""

    def record(info: BackupInfo) -> None:
        try:
            context.log_event(backup_materialization(info, timezone))
            for evaluation in checks(info) if checks else []:
                context.log_event(evaluation)
                if not evaluation.passed:
                    log.warning(f"backup {info.id}: {evaluation.check_name} failed: {evaluation.description}")
        except Exception as exc:  # noqa: BLE001 - never fail the operation over its record
            log.warning(f"backup {info.id} taken but not recorded (or checked) as the backups asset: {exc}")

    with backups_heard_by(record):
        yield
