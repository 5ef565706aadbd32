"""Ops of the maintenance domain."""

from dagster import MetadataValue, OpExecutionContext, op

from ultra_ops.defs.maintenance.config import CacheClearConfig
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.steps import partition_step
from ultra_ops.engine.maintenance.cache import clear_cache


@op
def cache_clear(
    context: OpExecutionContext, config: CacheClearConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> None:
    """Remove the keys matching a pattern (SCAN and UNLINK), or all with flush_all, under the lock."""
    with partition_step(context, settings, locks=locks, operation="cache clear") as s:
        result = clear_cache(
            s.env, pattern=config.pattern or None, flush_all=config.flush_all, log=s.log, redact=s.redact
        )
    context.add_output_metadata(
        {"removed": result["removed"], "mode": result["mode"], "result": MetadataValue.json(result)}
    )
