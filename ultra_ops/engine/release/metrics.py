"""Delivery metrics from ultra_ops's own release records, over a window ending on a day.

- deployment frequency: successful deploys per week;
- lead time: from the release's commit (its tag in the configured repository) to its deploy;
- change failure rate: the share of deploys that failed after changing the environment (rolled
  back, or the rollback failed too);
- recovery time: for a deploy rolled back automatically, its run's length (the rollback is the
  run's last part, so this bounds the time the environment ran broken); for one whose rollback
  failed too, until the next successful deploy or rollback ended.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from statistics import median

from ultra_ops.engine.release.git_tags import commit_time
from ultra_ops.engine.release.records import ReleaseRecord, ReleaseStatus, find_releases
from ultra_ops.engine.settings import Environment

_BROKE = (ReleaseStatus.ROLLED_BACK, ReleaseStatus.ROLLBACK_FAILED)


@dataclass(frozen=True)
class DeliveryMetrics:
    environment: str
    day: str  # the window's last day (UTC)
    window_days: int
    deploys: int  # deploy attempts that changed the environment (deployed, rolled back, rollback failed)
    deployed: int
    failed_changes: int
    deploys_per_week: float
    change_failure_rate: float | None
    lead_time_hours_median: float | None
    recovery_hours_median: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        def show(value: float | None, unit: str = "") -> str:
            return "-" if value is None else f"{value:g}{unit}"

        rows = [
            ("deployment frequency", f"{self.deploys_per_week:g} per week ({self.deployed} deploys)"),
            ("lead time (median)", show(self.lead_time_hours_median, " h")),
            (
                "change failure rate",
                show(None if self.change_failure_rate is None else round(self.change_failure_rate * 100, 1), " %"),
            ),
            ("recovery time (median)", show(self.recovery_hours_median, " h")),
        ]
        return "\n".join(["metric | value", "--- | ---", *(f"{k} | {v}" for k, v in rows)])


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def delivery_metrics(env: Environment, day: date, window_days: int = 30) -> DeliveryMetrics:
    """The metrics of the `window_days` days ending with `day` (UTC), from the release records."""
    end = datetime.combine(day + timedelta(days=1), time(0), UTC)
    start = end - timedelta(days=window_days)
    records = sorted(find_releases(env), key=lambda r: r.started_at)
    deploys = [
        r
        for r in records
        if r.operation == "deploy" and start <= _at(r.ended_at) < end and r.status in (ReleaseStatus.DEPLOYED, *_BROKE)
    ]
    deployed = [r for r in deploys if r.status == ReleaseStatus.DEPLOYED]
    broke = [r for r in deploys if r.status in _BROKE]
    leads = []
    for record in deployed:
        made = commit_time(env, record.commit)
        if made is not None:
            leads.append((_at(record.ended_at) - made).total_seconds() / 3600)
    recoveries = []
    for failure in broke:
        if failure.status == ReleaseStatus.ROLLED_BACK:
            recoveries.append((_at(failure.ended_at) - _at(failure.started_at)).total_seconds() / 3600)
            continue
        fixed = _next_recovery(records, failure)
        if fixed is not None:
            recoveries.append((_at(fixed.ended_at) - _at(failure.started_at)).total_seconds() / 3600)
    return DeliveryMetrics(
        environment=env.name,
        day=day.isoformat(),
        window_days=window_days,
        deploys=len(deploys),
        deployed=len(deployed),
        failed_changes=len(broke),
        deploys_per_week=round(len(deployed) / (window_days / 7), 3),
        change_failure_rate=round(len(broke) / len(deploys), 4) if deploys else None,
        lead_time_hours_median=round(median(leads), 3) if leads else None,
        recovery_hours_median=round(median(recoveries), 3) if recoveries else None,
    )


def _next_recovery(records: list[ReleaseRecord], failure: ReleaseRecord) -> ReleaseRecord | None:
    for record in records:
        if record.started_at <= failure.started_at:
            continue
        if record.status == ReleaseStatus.DEPLOYED or (
            record.operation == "rollback" and record.status == ReleaseStatus.ROLLED_BACK
        ):
            return record
    return None
