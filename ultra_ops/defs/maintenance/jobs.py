"""The maintenance domain's jobs: what its schedules start."""

from dagster import define_asset_job, in_process_executor

from ultra_ops.defs.maintenance.assets import database_maintenance
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.partitions import environment_config, environment_partitions

vacuum_job = define_asset_job(
    "vacuum_job",
    selection=[database_maintenance],
    partitions_def=environment_partitions,
    config=environment_config(),  # the environment's tags on every run, as for the release jobs
    executor_def=in_process_executor,  # the lock one step takes is held by the run's process
    tags={tags.DOMAIN: "maintenance", tags.OPERATION: "vacuum"},
    description="VACUUM ANALYZE an environment's database (the database_maintenance asset).",
)

MAINTENANCE_ASSETS = [database_maintenance]
MAINTENANCE_JOBS = [vacuum_job]
