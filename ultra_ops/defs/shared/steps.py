"""What every op does around its engine call: find its environment, hold its lock, redact its
log, and turn every error into a Dagster Failure.

Errors become a Failure whose text is already redacted, so no secret reaches the run's event log,
and its traceback stops at the op.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dagster import Failure, OpExecutionContext

from ultra_ops.defs.backups.cheap_checks import cheap_evaluations
from ultra_ops.defs.backups.records import recording_backups
from ultra_ops.defs.calendar.pending import recording_decisions
from ultra_ops.defs.release.releases import recording_releases
from ultra_ops.defs.shared.failures import redacted_failure
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings, RunSettings
from ultra_ops.defs.shared.tags import launched_by
from ultra_ops.engine.hosts.reach import Reach
from ultra_ops.engine.secrets import RedactingLog, Redactor
from ultra_ops.engine.settings import ENVIRONMENT_NAMES, Environment, Settings


@dataclass(frozen=True)
class Step:
    env: Environment
    log: RedactingLog
    redact: Redactor


@contextmanager
def failures_as_dagster(redact: Redactor | None = None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        # Any exception, not only ours: its text and chain would reach the event log (failures.py).
        raise redacted_failure(exc, (redact or Redactor()) | Redactor.for_process()) from None


def environment_of(context: OpExecutionContext) -> str:
    """The environment a run touches: its partition, chosen in the launchpad or by the launcher."""
    if not context.has_partition_key:
        raise Failure(
            description=f"{context.job_name} runs for one environment: choose its partition "
            f"({', '.join(ENVIRONMENT_NAMES)})",
            allow_retries=False,
        )
    return context.partition_key


def load(settings: OpsSettings) -> Settings:
    """The run's config (read on the first call of the run); a config error fails the step."""
    with failures_as_dagster():
        return settings.load()


@contextmanager
def step(
    context: OpExecutionContext,
    settings: Settings,
    environment: str,
    *,
    locks: EnvironmentLocks | None = None,
    operation: str = "",
    record_backups: bool = True,
    draft: Callable[[Environment], dict[str, Any]] | None = None,
) -> Iterator[Step]:
    """Find the environment in the run's config (`settings`, from the `settings` resource), hold its
    lock when given `locks`, redact the log, turn errors into Failures, and record every backup the
    step takes as a materialization of the backups asset (unless the step is that asset's own,
    `record_backups=False`), every release record as one of the releases asset, and every decision
    request opened or closed as pending_decisions. `draft`: the release record the run leaves if it
    dies (EnvironmentLocks.hold)."""
    with failures_as_dagster():
        configured = settings.environment(environment)
    redact = Redactor.for_environment(configured)
    with failures_as_dagster(redact), reached(settings, configured, redact, RedactingLog(context.log, redact)) as reach:
        # The environment as this machine reaches it: a hosted one's loopback addresses through the
        # run's tunnels to its host (opened here on first use), a dead tunnel a HostUnreachable.
        env = reach.environment
        with reach.failures():
            s = Step(env, RedactingLog(context.log, redact), redact)

            def hold() -> None:
                if locks is not None:
                    locks.hold(
                        env,
                        operation=operation or context.job_name,
                        run_id=context.run_id,
                        log=s.log,
                        draft=draft,
                        launched_by=launched_by(context.run.tags),
                    )

            if not record_backups:
                hold()
                yield s
                return
            with (
                recording_backups(context, settings.timezone, s.log, lambda info: cheap_evaluations(env, info, redact)),
                recording_releases(context, env, settings.timezone, redact, s.log),
                recording_decisions(context, settings, s.log),
            ):
                # Taking the lock recovers what a dead run left: the records it writes then (an
                # interrupted run's, an owed rollback's and its safety backup) are this run's too.
                hold()
                yield s


@contextmanager
def reached(settings: Settings, env: Environment, redact: Redactor, log: RedactingLog) -> Iterator[Reach]:
    """The run's reach of `env` (kept open for its later steps, closed when the run ends), or, for
    a config read outside a run's `settings` resource, one for this step alone."""
    if isinstance(settings, RunSettings):
        yield settings.reaches.get(env, redact=redact, log=log)
        return
    reach = Reach(env, redact=redact, log=log)
    try:
        yield reach
    finally:
        reach.close()


@contextmanager
def partition_step(
    context: OpExecutionContext,
    settings: OpsSettings,
    *,
    locks: EnvironmentLocks | None = None,
    operation: str = "",
    draft: Callable[[Environment], dict[str, Any]] | None = None,
) -> Iterator[Step]:
    """`step` for the environment the run is partitioned by, in the run's config."""
    loaded = load(settings)
    with step(context, loaded, environment_of(context), locks=locks, operation=operation, draft=draft) as s:
        yield s
