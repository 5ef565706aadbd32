"""The cheap checks of a backup (its checksums, and pg_restore reading its dump), and so its
freshness, evaluated in the run that took it: every backup, the deploy's and the manual ones too,
has its checks' verdict from the moment it exists, not "Not Evaluated" until someone runs them."""

from __future__ import annotations

from typing import Any

from dagster import AssetCheckEvaluation, AssetCheckSeverity, MetadataValue

from ultra_ops.defs.backups.records import BACKUPS
from ultra_ops.engine.backups.dump import dump_listing, tables_without_data
from ultra_ops.engine.backups.store import BackupInfo, verify_backup
from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment

CHECKSUMS = "backup_checksums"
DUMP_READABLE = "backup_dump_readable"

# One environment's outcome: passed, what it says, metadata.
Outcome = tuple[bool, str, dict[str, Any]]


def checksums_outcome(env: Environment, info: BackupInfo, _redact: Redactor) -> Outcome:
    verify_backup(env, info.id)
    return (
        True,
        f"{env.name}: backup {info.id}: {len(info.files)} files match the manifest",
        {"backup_id": info.id, "files": len(info.files), "size_bytes": info.size_bytes},
    )


def dump_readable_outcome(env: Environment, info: BackupInfo, redact: Redactor) -> Outcome:
    listing = dump_listing(env, info, redact=redact)
    missing = tables_without_data(listing, info.tables or {})
    meta = {
        "backup_id": info.id,
        "toc_entries": len(listing),
        "tables_recorded": len(info.tables or {}),
        "tables_without_data": MetadataValue.json(missing),
    }
    if missing:
        return False, f"{env.name}: backup {info.id}: the dump has no data for " + ", ".join(missing), meta
    return True, f"{env.name}: backup {info.id}: pg_restore reads {len(listing)} entries", meta


CHEAP_CHECKS = {CHECKSUMS: checksums_outcome, DUMP_READABLE: dump_readable_outcome}
FRESHNESS = "backup_freshness"


def cheap_evaluations(env: Environment, info: BackupInfo, redact: Redactor) -> list[AssetCheckEvaluation]:
    """Both cheap checks of a backup just taken, as evaluations of the backups asset's checks, and
    freshness (passed) when its checksums verify."""
    out = []
    for name, outcome_of in CHEAP_CHECKS.items():
        try:
            passed, text, meta = outcome_of(env, info, redact)
        except UltraOpsError as exc:  # what the check found wrong: red
            passed, text, meta = False, f"{env.name}: {redact(str(exc))}", {"backup_id": info.id}
        out.append(
            AssetCheckEvaluation(
                asset_key=BACKUPS,
                check_name=name,
                passed=passed,
                severity=AssetCheckSeverity.ERROR,
                description=text[:2000],
                metadata={"environment": env.name, "taken_by_this_run": True, **meta},
            )
        )
    if out[0].passed:
        # A backup whose checksums verify was just taken: the environment's newest good backup is 0 h
        # old. When it ages past the limit, backup_freshness_sensor runs the check again (red).
        out.append(
            AssetCheckEvaluation(
                asset_key=BACKUPS,
                check_name=FRESHNESS,
                passed=True,
                severity=AssetCheckSeverity.ERROR,
                description=f"{env.name}: newest good backup {info.id} was just taken "
                f"(limit {env.backup.max_age_hours:g} h)",
                metadata={
                    "environment": env.name,
                    "newest_good_backup_id": info.id,
                    "age_hours": 0.0,
                    "max_age_hours": env.backup.max_age_hours,
                },
            )
        )
    return out
