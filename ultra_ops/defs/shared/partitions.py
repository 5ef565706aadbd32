"""Every partitions definition of the code location, named once.

Environments are partitions of the environment-scoped jobs: the launchpad picks the environment
from a list, and the partition's tags (`ultra_ops/environment`) are on the run when it is submitted,
so the queue's one-run-per-environment limit holds for UI launches, schedules and backfills alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dagster import (
    DailyPartitionsDefinition,
    MultiPartitionsDefinition,
    PartitionedConfig,
    StaticPartitionsDefinition,
)

from ultra_ops.defs.shared.tags import environment_tags
from ultra_ops.engine.settings import ENVIRONMENT_NAMES

# The names the config may use; a config that leaves one out still loads, and a run for an
# environment it does not name fails at its first step saying so.
environment_partitions = StaticPartitionsDefinition(list(ENVIRONMENT_NAMES))


def environment_config(
    run_config_for: Callable[[str], Mapping[str, Any]] | None = None,
) -> PartitionedConfig:
    """A job's config per environment partition, with the environment's tags on every run."""
    return PartitionedConfig(
        partitions_def=environment_partitions,
        run_config_for_partition_key_fn=run_config_for or (lambda _key: {}),
        tags_for_partition_key_fn=environment_tags,
    )


def day_partitions(timezone: str, end_offset: int = 0) -> DailyPartitionsDefinition:
    """Days in the config's time zone, from the first day ultra_ops could have run; with end_offset=1
    today is a partition from its first minute, not only once it has ended."""
    return DailyPartitionsDefinition(start_date="2026-01-01", timezone=timezone, end_offset=end_offset)


def environment_day_partitions(timezone: str, end_offset: int = 0) -> MultiPartitionsDefinition:
    """(day, environment): keys look like `2026-11-26|staging`."""
    return MultiPartitionsDefinition(
        {"day": day_partitions(timezone, end_offset), "environment": environment_partitions}
    )


def environment_day_config(partitions: MultiPartitionsDefinition) -> PartitionedConfig:
    """Per (day, environment) partition: the environment's tags on every run."""

    def tags_for(key: str) -> Mapping[str, str]:
        return environment_tags(partitions.get_partition_key_from_str(key).keys_by_dimension["environment"])

    return PartitionedConfig(
        partitions_def=partitions, run_config_for_partition_key_fn=lambda _key: {}, tags_for_partition_key_fn=tags_for
    )


def _timezone() -> str:
    from ultra_ops.defs.shared.location import loaded_settings, location_timezone

    return location_timezone(loaded_settings())


# Days in the config's time zone as the code location loads it (UTC without a readable config).
# A day's logs and metrics are complete once it has ended, so those assets take past days only.
environment_days = environment_day_partitions(_timezone())
# A backup is taken now and belongs to today: the backups assets have today's partition too.
environment_days_to_date = environment_day_partitions(_timezone(), end_offset=1)
