"""An environment's release state written as a deploy leaves it, without deploying: a successful
deploy in its release records and, for `running`, the version in its env file."""

from __future__ import annotations

from typing import Any

from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.deployed import mark_deployed
from ultra_ops.engine.release.records import ReleaseRecord, ReleaseStatus, record_release
from ultra_ops.engine.settings import Environment


def record_deploy(env: Environment, version: str, **fields: Any) -> None:
    """A successful deploy of `version` in `env`'s release records (so the calendar may promote it)."""
    now = utc_timestamp()
    record_release(
        env,
        ReleaseRecord(
            environment=env.name,
            operation="deploy",
            version=version,
            previous_version=None,
            status=ReleaseStatus.DEPLOYED,
            started_at=now,
            ended_at=now,
            **fields,
        ),
    )


def running(env: Environment, version: str) -> None:
    """`env` runs `version`, deployed successfully."""
    env.env_file.parent.mkdir(parents=True, exist_ok=True)
    mark_deployed(env, version)
    record_deploy(env, version)


def record_deployed(env: Environment, version: str, by: str = "alice") -> None:
    """A verified deploy of `version` that ended now, by `by`, in a run named after it."""
    record_deploy(env, version, run_id=f"run-{env.name}-{version}", launched_by=by)
