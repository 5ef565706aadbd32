"""Sensors of the backups domain: backup freshness."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from dagster import (
    AssetCheckKey,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ultra_ops.defs.backups.jobs import backup_checks_job
from ultra_ops.defs.backups.records import BACKUPS
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.automations import sensor_status
from ultra_ops.defs.shared.location import loaded_settings, tick_settings
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.notify.webhook import message, send
from ultra_ops.engine.secrets import Redactor


def backup_sensors() -> list[SensorDefinition]:
    settings = loaded_settings()

    @sensor(
        name="backup_freshness_sensor",
        minimum_interval_seconds=900,
        job=backup_checks_job,
        default_status=sensor_status(settings, "backup_freshness_sensor"),
        description="Alert when an environment's newest complete backup is older than its "
        "backup.max_age_hours (26 h by default), and run the backups asset's freshness check "
        "for it, so the asset shows it red; once a day per environment.",
    )
    def backup_freshness_sensor(context: SensorEvaluationContext) -> SkipReason | SensorResult:
        current = tick_settings()
        if isinstance(current, SkipReason):
            return current
        now = datetime.now(UTC)
        alerted: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        stale, checks = [], []
        for env in current.environments.values():
            backups = list_backups(env)
            newest = datetime.fromisoformat(backups[0].created_at) if backups else None
            age_h = (now - newest).total_seconds() / 3600 if newest else None
            if age_h is not None and age_h <= env.backup.max_age_hours:
                continue
            what = f"newest backup is {age_h:.1f} h old" if age_h is not None else "no backup at all"
            stale.append(f"{env.name}: {what}")
            if alerted.get(env.name) == now.date().isoformat():
                continue  # told once today already
            body = message(
                "backup_stale",
                env.name,
                f"{what} (limit {env.backup.max_age_hours:g} h)",
                {"newest": backups[0].id if backups else ""},
            )
            send(current.notifications, body, redact=Redactor.for_environment(env), log=context.log)
            alerted[env.name] = now.date().isoformat()
            checks.append(
                RunRequest(
                    run_key=f"backup_freshness:{env.name}:{now.date().isoformat()}",
                    asset_check_keys=[AssetCheckKey(BACKUPS, "backup_freshness")],
                    tags={**tags.environment_tags(env.name), tags.OPERATION: "check backups"},
                )
            )
        if checks:
            return SensorResult(run_requests=checks, cursor=json.dumps(alerted))
        context.update_cursor(json.dumps(alerted))
        return SkipReason("stale: " + "; ".join(stale) if stale else "every environment has a fresh backup")

    return [backup_freshness_sensor]
