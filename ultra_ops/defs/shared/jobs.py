"""The one way a job of ultra_ops is declared: for one environment at a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dagster import colored_console_logger, in_process_executor, job

from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.console import progress_logger
from ultra_ops.defs.shared.partitions import environment_config

LOGGERS = {"console": colored_console_logger, "progress": progress_logger}


def environment_job(domain: str, operation: str, *, run_config_for: Callable[[str], Mapping[str, Any]] | None = None):  # noqa: ANN201
    """@job for one environment's operation: partitioned by environment, tagged, one process."""
    return job(
        executor_def=in_process_executor,
        logger_defs=LOGGERS,
        config=environment_config(run_config_for),
        tags={tags.DOMAIN: domain, tags.OPERATION: operation},
    )
