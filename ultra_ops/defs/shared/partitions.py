"""Every partitions definition of the code location, named once.

Environments are partitions of the environment-scoped jobs: the launchpad picks the environment
from a list, and the partition's tags (`ultra_ops/environment`) are on the run when it is submitted,
so the queue's one-run-per-environment limit holds for UI launches, schedules and backfills alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dagster import PartitionedConfig, StaticPartitionsDefinition

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
