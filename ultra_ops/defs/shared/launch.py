"""Running the release jobs against the local Dagster instance, as the CLI does.

Runs go into the instance at DAGSTER_HOME, so `dagster dev` on the same home shows every run the
shell started, with its steps, logs and metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance, build_reconstructable_job, execute_job


@dataclass
class LaunchResult:
    run_id: str
    success: bool
    message: str  # the first failure's text, or "" on success
    observations: list[dict[str, Any]] = field(default_factory=list)  # metadata of logged observations


def ensure_dagster_home(default: Path) -> Path:
    """Use DAGSTER_HOME when set; otherwise a persistent folder, so run history survives."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(default)
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    instance_file = Path(home) / "dagster.yaml"
    if not instance_file.exists():
        # Dagster's defaults (SQLite under DAGSTER_HOME), stated so Dagster does not warn about it.
        instance_file.write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return Path(home)


def _metadata_values(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def launch(job_name: str, run_config: dict[str, Any], tags: dict[str, str]) -> LaunchResult:
    """Execute a job of the code location in this process and return how it ended."""
    instance = DagsterInstance.get()
    recon = build_reconstructable_job("ultra_ops.definitions", "job_from_definitions", (job_name,))
    config = {**run_config, "loggers": {"progress": {}}}
    with execute_job(recon, instance=instance, run_config=config, tags=tags) as result:
        messages: list[str] = []
        observations: list[dict[str, Any]] = []
        for event in result.all_events:
            if event.event_type == DagsterEventType.STEP_FAILURE:
                data = event.step_failure_data
                if data.user_failure_data and data.user_failure_data.description:
                    messages.append(data.user_failure_data.description)
                elif data.error:
                    messages.append(data.error.message.strip())
            elif event.event_type == DagsterEventType.ASSET_OBSERVATION:
                observation = event.event_specific_data.asset_observation
                observations.append(_metadata_values(observation.metadata))
        if not result.success and not messages:
            messages.append(f"run {result.run_id} failed")
        return LaunchResult(result.run_id, result.success, messages[0] if messages else "", observations)
