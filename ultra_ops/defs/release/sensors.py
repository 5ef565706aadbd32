"""Sensors of the release domain: verify every deploy once more after it ends, roll back or alert
after a failed verification, and tell the webhook how deploys and rollbacks ended.

Each reacts to a run's end, so a notification never fails the run it reports on.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from dagster import (
    DagsterRunStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from ultra_ops.defs.backups.jobs import backup_job, nightly_backup_job
from ultra_ops.defs.release.health import health_state_job
from ultra_ops.defs.release.jobs import deploy_job, rollback_job, verify_job
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.automations import sensor_status
from ultra_ops.defs.shared.location import loaded_settings, tick_settings
from ultra_ops.engine.notify.webhook import message, send
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment, Settings
from ultra_ops.engine.verify.health import HealthPoll, poll_health

_EVENT = {
    "deploy_job": "deploy",
    "rollback_job": "rollback",
    "backup_job": "backup_failed",
    "nightly_backup_job": "backup_failed",
}


def _environment(run_tags: dict[str, str]) -> tuple[Settings, Environment] | None:
    name = run_tags.get(tags.ENVIRONMENT)
    settings = loaded_settings()
    if settings is None or name not in settings.environments:
        return None
    return settings, settings.environments[name]


def _notify(context: RunStatusSensorContext, event: str, text: str, extra: dict[str, str] | None = None) -> bool:
    run = context.dagster_run
    found = _environment(run.tags)
    if found is None:
        return False
    settings, env = found
    fields = {
        "version": run.tags.get(tags.VERSION, ""),
        "run": run.run_id,
        "launched by": tags.launched_by(run.tags),
        **(extra or {}),
    }
    body = message(event, env.name, text, fields)
    return send(settings.notifications, body, redact=Redactor.for_environment(env), log=context.log)


def release_sensors() -> list[SensorDefinition]:
    settings = loaded_settings()

    @run_status_sensor(
        name="verify_after_deploy_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[deploy_job],
        request_job=verify_job,
        default_status=sensor_status(settings, "verify_after_deploy_sensor"),
        description="Verify each environment again after every successful deploy, once per deploy.",
    )
    def verify_after_deploy_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        run = context.dagster_run
        environment = run.tags.get(tags.ENVIRONMENT)
        if not environment:
            return SkipReason(f"deploy run {run.run_id} names no environment")
        # The deploy's run id is the run key: each deploy is verified once, however often this ticks.
        return RunRequest(
            run_key=run.run_id,
            partition_key=environment,
            tags={
                **tags.launch_tags(environment, "verify", version=run.tags.get(tags.VERSION)),
                tags.AFTER_DEPLOY: run.run_id,
            },
        )

    @run_status_sensor(
        name="failed_verification_sensor",
        run_status=DagsterRunStatus.FAILURE,
        monitored_jobs=[verify_job],
        request_job=rollback_job,
        default_status=sensor_status(settings, "failed_verification_sensor"),
        description="After a failed verification: an alert always, and a rollback to the newest "
        "backup where the environment sets rollback_on_failed_verification.",
    )
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
        return RunRequest(
            run_key=run.run_id,
            partition_key=env.name,
            tags={**tags.launch_tags(env.name, "rollback"), tags.AFTER_VERIFY: run.run_id},
        )

    @run_status_sensor(
        name="release_notification_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[deploy_job, rollback_job],
        default_status=sensor_status(settings, "release_notification_sensor"),
        description="Tell the webhook of every successful deploy and rollback.",
    )
    def release_notification_sensor(context: RunStatusSensorContext) -> SkipReason:
        run = context.dagster_run
        event = _EVENT[run.job_name]
        done = "deployed" if event == "deploy" else "rolled back"
        sent = _notify(context, event, f"{run.tags.get(tags.VERSION, 'a release')} {done}")
        return SkipReason("notified" if sent else "no webhook configured or not delivered")

    @run_failure_sensor(
        name="release_failure_sensor",
        monitored_jobs=[deploy_job, rollback_job, backup_job, nightly_backup_job],
        default_status=sensor_status(settings, "release_failure_sensor"),
        description="Tell the webhook of every failed deploy, rollback and backup.",
    )
    def release_failure_sensor(context: RunFailureSensorContext) -> None:
        run = context.dagster_run
        reason = context.failure_event.message or "no reason recorded"
        _notify(context, _EVENT[run.job_name], f"{run.job_name.removesuffix('_job')} FAILED", {"reason": reason})

    @sensor(
        name="health_monitor_sensor",
        job=health_state_job,
        minimum_interval_seconds=settings.calendar.health_monitor_interval_s if settings else 60,
        default_status=sensor_status(settings, "health_monitor_sensor"),
        description="Poll each environment's /health?detail=true; when its state changed since the last "
        "poll, record the health_state partition (a verification run). No run while nothing changed.",
    )
    def health_monitor_sensor(context: SensorEvaluationContext) -> list[RunRequest] | SkipReason:
        current = tick_settings()
        if isinstance(current, SkipReason):
            return current
        cursor = json.loads(context.cursor) if context.cursor else {}
        last: dict[str, str] = cursor.get("states", {})
        seq = int(cursor.get("seq", 0))
        envs = list(current.environments.values())
        # At once: a tick has a 60 s deadline, and each poll may wait for its timeout.
        with ThreadPoolExecutor(max_workers=max(len(envs), 1)) as pool:
            polls: list[HealthPoll] = list(pool.map(lambda e: poll_health(e, min(e.verify.timeout_s, 10.0)), envs))
        requests, unchanged = [], []
        for poll in polls:
            if last.get(poll.environment) == poll.signature():
                unchanged.append(f"{poll.environment} {'healthy' if poll.healthy else 'unhealthy'}")
                continue
            seq += 1
            last[poll.environment] = poll.signature()
            # A sequence number, not the state: run keys dedupe forever, and a state can come back.
            requests.append(
                RunRequest(
                    run_key=f"health:{poll.environment}:{seq}",
                    partition_key=poll.environment,
                    tags={
                        **tags.launch_tags(poll.environment, "health"),
                        tags.HEALTH_CHANGE: poll.describe()[:200],
                    },
                )
            )
        context.update_cursor(json.dumps({"states": last, "seq": seq}))
        return requests or SkipReason("no change: " + ", ".join(unchanged))

    return [
        verify_after_deploy_sensor,
        failed_verification_sensor,
        release_notification_sensor,
        release_failure_sensor,
        health_monitor_sensor,
    ]
