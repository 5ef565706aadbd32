"""The maintenance domain's jobs: what its schedules and commands start."""

from dagster import define_asset_job, in_process_executor

from ultra_ops.defs.maintenance import ops
from ultra_ops.defs.maintenance.assets import cache_state, database_maintenance, log_archive, service_status
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.jobs import environment_job
from ultra_ops.defs.shared.partitions import (
    environment_config,
    environment_days,
    environment_partitions,
)


def _asset_job(name: str, asset: object, operation: str, description: str):  # noqa: ANN202
    return define_asset_job(
        name,
        selection=[asset],
        partitions_def=environment_partitions,
        config=environment_config(),  # the environment's tags on every run, as for the release jobs
        executor_def=in_process_executor,  # a lock one step takes is held by the run's process
        tags={tags.DOMAIN: "maintenance", tags.OPERATION: operation},
        description=description,
    )


vacuum_job = _asset_job(
    "vacuum_job",
    database_maintenance,
    "vacuum",
    "VACUUM ANALYZE an environment's database (the database_maintenance asset).",
)
status_job = _asset_job(
    "status_job",
    service_status,
    "status",
    "The runtime's view of an environment's services (the service_status asset).",
)
cache_stats_job = _asset_job(
    "cache_stats_job",
    cache_state,
    "cache stats",
    "Read an environment's Redis INFO into the cache_state asset, with its checks.",
)


# No per-partition config (so no environment tags from the launchpad): Dagster refuses a
# PartitionedConfig on a job whose asset backfills a range in one run. The schedule and the CLI tag
# their runs with the environment themselves.
log_archive_job = define_asset_job(
    "log_archive_job",
    selection=[log_archive],
    partitions_def=environment_days,
    executor_def=in_process_executor,
    tags={tags.DOMAIN: "maintenance", tags.OPERATION: "archive logs"},
    description="Rotate and archive one day of an environment's logs (the log_archive asset).",
)


@environment_job("maintenance", "cache clear")
def cache_clear_job() -> None:
    """Clear an environment's cache: the keys matching a pattern, or everything with flush_all."""
    ops.cache_clear()


MAINTENANCE_ASSETS = [database_maintenance, cache_state, log_archive, service_status]
MAINTENANCE_JOBS = [vacuum_job, status_job, cache_stats_job, cache_clear_job, log_archive_job]
