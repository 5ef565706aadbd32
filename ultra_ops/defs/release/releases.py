"""What runs where: the `releases` asset, one partition per environment, whose materializations are
the release records (records.py), each recorded by the run that wrote it, deploy or rollback,
failed or not. The partition's latest materialization says what the environment runs now; its
history is the environment's release history."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import AssetKey, AssetMaterialization, AssetSpec, MetadataValue, OpExecutionContext

from ultra_ops.defs.shared.partitions import environment_partitions
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.events import heard_by
from ultra_ops.engine.release.records import RELEASE_TOPIC, ReleaseRecord
from ultra_ops.engine.secrets import Log, Redactor
from ultra_ops.engine.settings import Environment

RELEASES = AssetKey("releases")

RELEASES_SPEC = AssetSpec(
    RELEASES,
    partitions_def=environment_partitions,
    group_name="release",
    owners=["team:ops"],
    description="What runs where: one partition per environment, one materialization per deploy or rollback "
    "(failed ones too), recorded by the run that did it: `running` is the version the environment runs "
    "after it; then the version it put in place (or tried to), the previous version, commit, backup, who, "
    "when (in the config's time zone), status and reason. The Partitions tab shows each environment's "
    "current version; its events are the release history. Delivery metrics: delivery_metrics.",
)


def release_metadata(record: ReleaseRecord, running: str | None, timezone: str, redact: Redactor) -> dict[str, Any]:
    return {
        "running": running or "",
        "operation": record.operation,
        "status": record.status.value,
        "version": record.version or "",
        "previous_version": record.previous_version or "",
        "commit": record.commit or "",
        "backup_id": record.backup_id or "",
        "launched_by": record.launched_by or "",
        "started_at": local_time(record.started_at, timezone),
        "ended_at": local_time(record.ended_at, timezone),
        "reason": redact(record.reason or ""),
        "record": MetadataValue.json(redact.value(record.to_dict())),
    }


def release_materialization(
    env: Environment, record: ReleaseRecord, timezone: str, redact: Redactor
) -> AssetMaterialization:
    running = deployed_version(env)
    what = f"{record.operation} {record.version or '-'}: {record.status.value}"
    return AssetMaterialization(
        asset_key=RELEASES,
        partition=env.name,
        description=f"{env.name} runs {running or 'nothing yet'} ({what})",
        metadata=release_metadata(record, running, timezone, redact),
    )


@contextmanager
def recording_releases(
    context: OpExecutionContext, env: Environment, timezone: str, redact: Redactor, log: Log
) -> Iterator[None]:
    """Record every release record the step writes as a materialization of its environment's
    partition. A record that cannot be logged is still written: only a warning."""

    def record(written: ReleaseRecord) -> None:
        if written.environment != env.name:
            return
        try:
            context.log_event(release_materialization(env, written, timezone, redact))
        except Exception as exc:  # noqa: BLE001 - never fail the operation over its record
            log.warning(f"release record written but not recorded as a materialization of releases: {exc}")

    with heard_by(RELEASE_TOPIC, record):
        yield
