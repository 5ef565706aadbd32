"""An environment's release state written as a deploy leaves it, without deploying: the version in
its env file and a successful deploy in its release records."""

from __future__ import annotations

from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.deployed import mark_deployed
from ultra_ops.engine.release.records import ReleaseRecord, ReleaseStatus, record_release
from ultra_ops.engine.settings import Environment


def running(env: Environment, version: str) -> None:
    """`env` runs `version`, deployed successfully (so the calendar may promote it from there)."""
    env.env_file.parent.mkdir(parents=True, exist_ok=True)
    mark_deployed(env, version)
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
        ),
    )
