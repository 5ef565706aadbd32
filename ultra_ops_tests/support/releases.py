"""Release records written as a deploy would, for tests of what reads them (calendar, views)."""

from __future__ import annotations

from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.release.records import ReleaseRecord, ReleaseStatus, record_release
from ultra_ops.engine.settings import Environment


def record_deployed(env: Environment, version: str, by: str = "alice") -> None:
    """A verified deploy of `version` that ended now."""
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
            run_id=f"run-{env.name}-{version}",
            launched_by=by,
        ),
    )
