"""The calendar domain's jobs."""

from ultra_ops.defs.calendar import ops
from ultra_ops.defs.shared.jobs import environment_job


@environment_job("calendar", "approve")
def approve_job() -> None:
    """Approve a version for an environment: scheduled production deploys wait for one."""
    ops.approve_release()


CALENDAR_JOBS = [approve_job]
