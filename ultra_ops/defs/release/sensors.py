"""Sensors of the release domain: verify every deploy once more after it ends, roll back or alert
after a failed verification, and tell the webhook how deploys and rollbacks ended.

Each reacts to a run's end, so a notification never fails the run it reports on.
"""

from __future__ import annotations

from dagster import (
    DagsterRunStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
)

from ultra_ops.defs.backups.jobs import backup_job, nightly_backup_job
from ultra_ops.defs.release.jobs import deploy_job, rollback_job, verify_job
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.automations import loaded_settings, sensor_status
from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.notify.webhook import message, send
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment, Settings, load_settings

_EVENT = {"deploy_job": "deploy", "rollback_job": "rollback", "backup_job": "backup_failed",
          "nightly_backup_job": "backup_failed"}


def _environment(run_tags: dict[str, str]) -> tuple[Settings, Environment] | None:
    name = run_tags.get(tags.ENVIRONMENT)
    try:
        settings = load_settings()
    except UltraOpsError:
        return None
    if name not in settings.environments:
        return None
    return settings, settings.environments[name]


def _notify(context: RunStatusSensorContext, event: str, text: str, extra: dict[str, str] | None = None) -> bool:
    run = context.dagster_run
    found = _environment(run.tags)
    if found is None:
        return False
    settings, env = found
    fields = {"version": run.tags.get(tags.VERSION, ""), "run": run.run_id,
              "launched by": tags.launched_by(run.tags), **(extra or {})}
    body = message(event, env.name, text, fields)
    return send(settings.notifications, body, redact=Redactor.for_environment(env), log=context.log)


def release_sensors() -> list[SensorDefinition]:
    settings = loaded_settings()

    @run_status_sensor(name="verify_after_deploy_sensor", run_status=DagsterRunStatus.SUCCESS,
                       monitored_jobs=[deploy_job], request_job=verify_job,
                       default_status=sensor_status(settings, "verify_after_deploy_sensor"),
                       description="Verify each environment again after every successful deploy, once per deploy.")
    def verify_after_deploy_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        run = context.dagster_run
        environment = run.tags.get(tags.ENVIRONMENT)
        if not environment:
            return SkipReason(f"deploy run {run.run_id} names no environment")
        # The deploy's run id is the run key: each deploy is verified once, however often this ticks.
        return RunRequest(run_key=run.run_id, partition_key=environment,
                          tags={**tags.launch_tags(environment, "verify", version=run.tags.get(tags.VERSION)),
                                "ultra_ops/after_deploy": run.run_id})

    @run_status_sensor(name="failed_verification_sensor", run_status=DagsterRunStatus.FAILURE,
                       monitored_jobs=[verify_job], request_job=rollback_job,
                       default_status=sensor_status(settings, "failed_verification_sensor"),
                       description="After a failed verification: an alert always, and a rollback to the newest "
                                   "backup where the environment sets rollback_on_failed_verification.")
    def failed_verification_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        run = context.dagster_run
        found = _environment(run.tags)
        if found is None:
            return SkipReason(f"verify run {run.run_id}: its environment is not in the config")
        _, env = found
        rolls_back = env.rollback_on_failed_verification
        _notify(context, "verification_failed", "verification failed" + ("; rolling back" if rolls_back else ""))
        if not rolls_back:
            return SkipReason(f"{env.name} does not roll back on a failed verification; alert sent")
        return RunRequest(run_key=run.run_id, partition_key=env.name,
                          tags={**tags.launch_tags(env.name, "rollback"), "ultra_ops/after_verify": run.run_id})

    @run_status_sensor(name="release_notification_sensor", run_status=DagsterRunStatus.SUCCESS,
                       monitored_jobs=[deploy_job, rollback_job],
                       default_status=sensor_status(settings, "release_notification_sensor"),
                       description="Tell the webhook of every successful deploy and rollback.")
    def release_notification_sensor(context: RunStatusSensorContext) -> SkipReason:
        run = context.dagster_run
        event = _EVENT[run.job_name]
        done = "deployed" if event == "deploy" else "rolled back"
        sent = _notify(context, event, f"{run.tags.get(tags.VERSION, 'a release')} {done}")
        return SkipReason("notified" if sent else "no webhook configured or not delivered")

    @run_failure_sensor(name="release_failure_sensor", monitored_jobs=[deploy_job, rollback_job, backup_job,
                                                                        nightly_backup_job],
                        default_status=sensor_status(settings, "release_failure_sensor"),
                        description="Tell the webhook of every failed deploy, rollback and backup.")
    def release_failure_sensor(context: RunFailureSensorContext) -> None:
        run = context.dagster_run
        reason = context.failure_event.message or "no reason recorded"
        _notify(context, _EVENT[run.job_name], f"{run.job_name.removesuffix('_job')} FAILED", {"reason": reason})

    return [verify_after_deploy_sensor, failed_verification_sensor, release_notification_sensor,
            release_failure_sensor]
