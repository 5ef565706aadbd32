"""Delivery metrics equal those of a release history built in the test."""

from __future__ import annotations

import os
import subprocess
from datetime import date, datetime
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, MultiPartitionKey, materialize

from ultra_ops.defs.release.assets import delivery_metrics
from ultra_ops.defs.shared.resources import OpsSettings
from ultra_ops.engine.release.git_tags import commit_of
from ultra_ops.engine.release.metrics import delivery_metrics as compute
from ultra_ops.engine.release.records import ReleaseRecord, record_release
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_config

pytestmark = pytest.mark.unit


def _git(repo: Path, *args: str, when: str | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    if when:
        env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"] = when
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def _record(env, version: str, status: str, start: str, end: str, operation: str = "deploy") -> None:
    record_release(
        env,
        ReleaseRecord(
            environment=env.name,
            operation=operation,
            version=version,
            previous_version=None,
            status=status,
            commit=commit_of(env, version),
            started_at=datetime.fromisoformat(start).isoformat(),
            ended_at=datetime.fromisoformat(end).isoformat(),
        ),
    )


def test_metrics_of_a_release_history(tmp_path: Path, dagster_home: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    for version, when in (
        ("v1.0.0", "2026-11-01T08:00:00+00:00"),
        ("v1.1.0", "2026-11-08T08:00:00+00:00"),
        ("v1.2.0", "2026-11-15T06:00:00+00:00"),
    ):
        _git(repo, "commit", "-q", "--allow-empty", "-m", version, when=when)
        _git(repo, "tag", "-a", version, "-m", f"Release {version}", when=when)
    config = write_config(tmp_path, "unused_db", extra=f'git_repo = "{repo}"')
    env = load_settings(config).environment("staging")
    _record(env, "v1.0.0", "deployed", "2026-11-02T08:00:00+00:00", "2026-11-02T10:00:00+00:00")  # lead 26 h
    _record(env, "v1.1.0", "rolled_back", "2026-11-09T08:00:00+00:00", "2026-11-09T08:30:00+00:00")  # 0.5 h
    _record(env, "v1.1.0", "rollback_failed", "2026-11-10T08:00:00+00:00", "2026-11-10T09:00:00+00:00")
    _record(
        env, "v1.0.0", "rolled_back", "2026-11-10T11:00:00+00:00", "2026-11-10T12:00:00+00:00", operation="rollback"
    )  # recovers the failed one: 4 h after it started
    _record(env, "v1.1.0", "failed", "2026-11-11T08:00:00+00:00", "2026-11-11T08:05:00+00:00")  # changed nothing
    _record(env, "v1.2.0", "deployed", "2026-11-16T06:00:00+00:00", "2026-11-16T08:00:00+00:00")  # lead 26 h
    _record(env, "v1.3.0", "deployed", "2026-12-20T06:00:00+00:00", "2026-12-20T08:00:00+00:00")  # after the window

    metrics = compute(env, date(2026, 11, 30), window_days=30)
    assert (metrics.deploys, metrics.deployed, metrics.failed_changes) == (4, 2, 2)
    assert metrics.deploys_per_week == round(2 / (30 / 7), 3)
    assert metrics.change_failure_rate == 0.5
    assert metrics.lead_time_hours_median == 26.0
    assert metrics.recovery_hours_median == round((0.5 + 4.0) / 2, 3)
    assert "change failure rate | 50 %" in metrics.table()

    # A day that has been (partitions end today): the window holds the same records.
    key = MultiPartitionKey({"day": "2026-11-26", "environment": "staging"})
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        result = materialize(
            [delivery_metrics],
            partition_key=key,
            instance=instance,
            resources={"settings": OpsSettings(config_path=str(config))},
        )
        assert result.success
        event = instance.get_latest_materialization_event(AssetKey("delivery_metrics"))
    meta = {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}
    assert meta["change_failure_rate"] == 0.5 and meta["lead_time_hours_median"] == 26.0
