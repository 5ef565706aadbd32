"""Every run tag ultra_ops sets or reads, named once.

The queue's one-run-per-environment limit (dagster.yaml), the CLI, the release records, the
schedules and the sensors all key on these names, so they live here and nowhere else.

The UI's Runs list shows every tag outside Dagster's namespaces as a chip. What only ultra_ops itself
reads (which process runs a run, a skipped step, the run a sensor answers) goes under Dagster's
hidden prefix `.dagster/`: kept on the run, read by ultra_ops, never shown in the UI.
"""

from __future__ import annotations

from collections.abc import Mapping

ENVIRONMENT = "ultra_ops/environment"  # the queue limits runs per value of this tag
VERSION = "ultra_ops/version"
_HIDDEN = ".dagster/ultra_ops."  # Dagster's HIDDEN_TAG_PREFIX: on the run, out of the UI
OPERATION = "ultra_ops/operation"  # deploy, verify, rollback, backup, stop, recover
BACKUP_ID = "ultra_ops/backup_id"
SKIP_TESTS = _HIDDEN + "skip_tests"
SKIP_BUILD = _HIDDEN + "skip_build"
EMERGENCY = "ultra_ops/emergency"  # an emergency fix: past the calendar and the promotion gate
DOWNGRADE = "ultra_ops/downgrade"  # a deploy of a version older than the one running, allowed with a reason
LAUNCHED_BY = "ultra_ops/launched_by"  # the OS user behind a CLI run
DOMAIN = _HIDDEN + "domain"
PROCESS = _HIDDEN + "process"  # host:pid:start of the CLI process running the run in-process
AFTER_DEPLOY = _HIDDEN + "after_deploy"  # the deploy run a sensor's verify run checks again
AFTER_VERIFY = _HIDDEN + "after_verify"  # the failed verify run a sensor's rollback run answers
HEALTH_CHANGE = "ultra_ops/health_change"  # what changed in the health a monitor's run records

# Dagster's own tags that ultra_ops reads.
PARTITION = "dagster/partition"
SCHEDULE = "dagster/schedule_name"
SENSOR = "dagster/sensor_name"
USER = "user"  # the UI's "Launched by" column (its DagsterTag.User); set by the CLI beside LAUNCHED_BY


def environment_tags(environment: str) -> dict[str, str]:
    """The tags of an environment partition: on the run from the moment it is submitted."""
    return {ENVIRONMENT: environment}


def launch_tags(
    environment: str,
    operation: str,
    *,
    version: str | None = None,
    backup_id: str | None = None,
    launched_by: str | None = None,
    flags: Mapping[str, bool] | None = None,
) -> dict[str, str]:
    """The tags a launcher (CLI, schedule, sensor) puts on a run before it is submitted."""
    tags = {PARTITION: environment, **environment_tags(environment), OPERATION: operation}
    if version:
        tags[VERSION] = version
    if backup_id:
        tags[BACKUP_ID] = backup_id
    if launched_by:
        tags.update(launcher_tags(launched_by))
    for key, on in (flags or {}).items():
        if on:
            tags[key] = "true"
    return tags


def launcher_tags(user: str) -> dict[str, str]:
    """Who launches a run: ultra_ops's own tag, and the one the UI shows as "Launched by"."""
    return {LAUNCHED_BY: user, USER: user}


def launched_by(tags: Mapping[str, str]) -> str:
    """Who started a run: the CLI's user (or a UI user where the webserver names one), the schedule
    or sensor, else a person in the UI."""
    for key in (LAUNCHED_BY, USER):
        if tags.get(key):
            return tags[key]
    if tags.get(SCHEDULE):
        return f"schedule:{tags[SCHEDULE]}"
    if tags.get(SENSOR):
        return f"sensor:{tags[SENSOR]}"
    return "ui"
