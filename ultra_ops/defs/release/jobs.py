"""The release jobs, partitioned by environment. Steps run in one process so the environment lock
taken by one step is held by the next."""

from __future__ import annotations

from typing import Any

from dagster import in_process_executor, job

from ultra_ops.defs.release import deploy_ops, ops, rollback_ops
from ultra_ops.defs.release.checklist import checklist_items
from ultra_ops.defs.release.config import DeployConfig, deploy_run_config
from ultra_ops.defs.release.health import health_state_job
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.jobs import LOGGERS, environment_job
from ultra_ops.defs.shared.location import location_settings
from ultra_ops.engine.calendar.offer import offered_version
from ultra_ops.engine.errors import UltraOpsError


def _deploy_form(environment: str) -> dict[str, Any]:
    """What the launchpad fills in for an environment: the version its next release tick would deploy.
    Always a `tag` key, null when there is none: the launchpad merges a picked partition's config into
    the form, and a missing key would leave the previous environment's tag standing."""
    # Evaluated when an operator picks a partition in the launchpad: never fail the form over it.
    try:
        tag, _why = offered_version(location_settings(), environment)
    except (UltraOpsError, OSError):
        tag = None
    return deploy_run_config(DeployConfig(tag=tag))


@environment_job("release", "deploy", run_config_for=_deploy_form)
def deploy_job() -> None:
    """Deploy a release: checklist, tests, backup, build, push, migrate, up, verify (rolling back on
    failure), tag, record."""
    req = deploy_ops.deploy_plan()
    req = deploy_ops.deploy_checklist(req)
    req = deploy_ops.deploy_tests(req)
    req = deploy_ops.deploy_backup(req)
    req = deploy_ops.deploy_build(req)
    req = deploy_ops.deploy_push(req)
    req = deploy_ops.deploy_migrate(req)
    req = deploy_ops.deploy_up(req)
    req = deploy_ops.deploy_verify(req)
    req = deploy_ops.deploy_tag(req)
    deploy_ops.deploy_record(req)


@environment_job("release", "verify")
def verify_job() -> None:
    """Verify an environment: health, database, Redis, LLM providers, API endpoints, smoke tests and
    performance; once, or over its verification window."""
    ops.verify_checks()


@environment_job("release", "rollback")
def rollback_job() -> None:
    """Roll an environment back to a backup (the newest by default): safety backup and restore into a
    scratch database while the current release serves, then stop, swap and start (one step) and verify."""
    req = rollback_ops.rollback_plan()
    req = rollback_ops.rollback_prepare(req)
    req = rollback_ops.rollback_restart(req)
    req = rollback_ops.rollback_verify(req)
    rollback_ops.rollback_record(req)


@environment_job("release", "stop")
def stop_job() -> None:
    """Stop an environment's services, under its lock."""
    ops.stop_services()


# Not partitioned by environment, so it carries no `ultra_ops/environment` tag: the queue's one run
# per environment must not hold the decision behind the very deploy that waits for it.
@job(executor_def=in_process_executor, logger_defs=LOGGERS, tags={tags.DOMAIN: "release", tags.OPERATION: "decide"})
def verification_decision_job() -> None:
    """Approve or roll back a release whose verification window was inconclusive (who decides is recorded)."""
    ops.decide_verification()


@job(
    executor_def=in_process_executor,
    logger_defs=LOGGERS,
    tags={tags.DOMAIN: "release", tags.OPERATION: "release_branch"},
)
def release_branch_job() -> None:
    """Make release/vX.Y.Z from main in the Ultra AI repository, with the version written into
    package.json and the tracked env files. The staging schedule deploys the newest such branch.
    Not partitioned: a release is made once, for every environment."""
    ops.create_release_branch()


@environment_job("release", "checklist")
def checklist_job() -> None:
    """The release document's pre-release checklist for an environment, every item with its evidence;
    fails when an item fails (deploy_job runs the same checklist as its blocking second step)."""
    checklist_items()


RELEASE_JOBS = [
    deploy_job,
    verify_job,
    rollback_job,
    stop_job,
    release_branch_job,
    checklist_job,
    verification_decision_job,
    health_state_job,
]
