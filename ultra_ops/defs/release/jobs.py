"""The release jobs. Steps run in one process so the environment lock spans the whole run."""

from __future__ import annotations

from functools import partial

from dagster import colored_console_logger, in_process_executor, job

from ultra_ops.defs.release import ops
from ultra_ops.defs.shared.console import progress_logger

_JOB_TAGS = {"ultra_ops/domain": "release"}
_LOGGERS = {"console": colored_console_logger, "progress": progress_logger}
release_job = partial(job, executor_def=in_process_executor, tags=_JOB_TAGS, logger_defs=_LOGGERS)


@release_job(description="Deploy a release: checklist, tests, backup, build, push, migrate, up, verify "
             "(rolling back on failure), tag, record.")
def deploy_job() -> None:
    req = ops.deploy_plan()
    req = ops.deploy_checklist(req)
    req = ops.deploy_tests(req)
    req = ops.deploy_backup(req)
    req = ops.deploy_build(req)
    req = ops.deploy_push(req)
    req = ops.deploy_migrate(req)
    req = ops.deploy_up(req)
    req = ops.deploy_verify(req)
    req = ops.deploy_tag(req)
    ops.deploy_record(req)


@release_job(description="Verify an environment: health, database, Redis, LLM providers and API endpoints.")
def verify_job() -> None:
    ops.verify_checks()


@release_job(description="Roll an environment back to a backup (the newest by default), restart and verify it.")
def rollback_job() -> None:
    req = ops.rollback_plan()
    req = ops.rollback_stop(req)
    req = ops.rollback_restore(req)
    req = ops.rollback_start(req)
    req = ops.rollback_verify(req)
    ops.rollback_record(req)


RELEASE_JOBS = [deploy_job, verify_job, rollback_job]
