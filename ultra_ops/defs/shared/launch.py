"""Running a job of the code location from the shell, recorded exactly as the UI records a run.

`execute_job` would record the run with no code location origin: the UI then lists it only in
the global Runs list, not under its job or on the Overview timeline, and warns when it is
re-executed. Here the run is created from the job as the `ultra_ops` code location presents it
(an in-process location: the same record as the webserver's, without starting a gRPC server),
then executed in this process, synchronously, so the CLI holds the environment lock itself and
prints progress as the steps run.

These are `dagster._core` APIs, pinned with the Dagster family in pyproject.toml; the test
`test_cli_runs_are_recorded_under_their_job` fails when they move.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.execution.plan.objects import ErrorSource
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from ultra_ops.defs.shared.tags import PARTITION, PROCESS
from ultra_ops.engine.owners import owner_alive, this_process
from ultra_ops.engine.paths import REPOSITORY_ROOT
from ultra_ops.engine.settings import default_config_path

LOCATION_NAME = "ultra_ops"  # the name in workspace.yaml and [tool.dagster]: runs are filed under it
MODULE = "ultra_ops.definitions"
_REPOSITORY = "__repository__"  # the repository a Definitions object becomes


@dataclass
class LaunchResult:
    run_id: str
    success: bool
    message: str  # the first failure's text, or "" on success
    asset_metadata: list[dict[str, Any]] = field(default_factory=list)  # of its observations and materializations
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # step key -> its output's metadata
    checks: list[dict[str, Any]] = field(default_factory=list)  # asset check evaluations: name, passed, ...
    # Ctrl-C or SIGTERM stopped a step where no handler of ours caught it (Dagster holds a signal
    # back to the next step's start): the message cannot say what state it left; the caller asks.
    interrupted: bool = False


def default_dagster_home(config_file: Path) -> Path:
    """Where runs are recorded when DAGSTER_HOME is not set: .dagster_home beside the config file
    (the repository's .dagster_home for its ultra_ops.toml), so run history survives."""
    return config_file.resolve().parent / ".dagster_home"


def ensure_dagster_home(config_file: Path | None = None) -> Path:
    """DAGSTER_HOME when set, else the default home of `config_file` (the operator's default config
    when None), made ready: the folder and its dagster.yaml. Sets DAGSTER_HOME for this process."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(default_dagster_home(config_file or default_config_path()))
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    instance_file = Path(home) / "dagster.yaml"
    if not instance_file.exists():
        instance_file.write_text(local_instance_yaml(Path(home)))
    return Path(home)


def local_instance_yaml(home: Path) -> str:
    """SQLite storage under `home`, with one event log database for all runs: Dagster's default
    creates and migrates a new database per run, which costs a CLI run about 0.3 s."""
    return (
        "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
        "event_log_storage:\n  module: dagster._core.storage.event_log\n"
        "  class: ConsolidatedSqliteEventLogStorage\n"
        f"  config:\n    base_dir: {json.dumps(str(home.resolve() / 'event_log'))}\n"
    )


def _working_directory() -> str:
    # The folder holding the ultra_ops package, as a code server started from workspace.yaml sees it.
    return str(REPOSITORY_ROOT)


def _metadata_values(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def _outcome(instance: DagsterInstance, run_id: str, success: bool) -> LaunchResult:
    messages: list[str] = []
    observations: list[dict[str, Any]] = []
    outputs: dict[str, dict[str, Any]] = {}
    checks: list[dict[str, Any]] = []
    interrupted = False
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            if data.error_source == ErrorSource.INTERRUPT:
                interrupted = True  # its text is the interrupt's bare type name
            elif data.user_failure_data and data.user_failure_data.description:
                messages.append(data.user_failure_data.description)
            elif data.error:
                messages.append(data.error.message.strip())
        elif event.event_type == DagsterEventType.ASSET_OBSERVATION:
            observations.append(_metadata_values(event.event_specific_data.asset_observation.metadata))
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            observations.append(_metadata_values(event.event_specific_data.materialization.metadata))
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            checks.append(
                {
                    "name": evaluation.check_name,
                    "passed": evaluation.passed,
                    "severity": evaluation.severity.value,
                    "description": evaluation.description or "",
                    "metadata": _metadata_values(evaluation.metadata),
                }
            )
        elif event.event_type == DagsterEventType.STEP_OUTPUT and event.step_key:
            outputs[event.step_key] = _metadata_values(event.step_output_data.metadata or {})
        elif event.event_type == DagsterEventType.RUN_FAILURE and not messages and event.message:
            messages.append(f"run {run_id} was interrupted (Ctrl-C or SIGTERM)" if interrupted else event.message)
    if not success and not messages:
        messages.append(f"run {run_id} failed")
    message = messages[0] if messages else ""
    return LaunchResult(run_id, success, message, observations, outputs, checks, interrupted=interrupted)


def _process_tag(owner: dict[str, Any]) -> str:
    return f"{owner['host']}:{owner['pid']}:{owner['start'] or ''}"


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark failed the runs a killed CLI process left STARTED: nothing else would, since no run
    launcher or monitor owns a run executed in the CLI's own process. Returns their ids."""
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])):
        value = run.tags.get(PROCESS)
        if not value:
            continue
        host, _, rest = value.partition(":")
        pid, _, start = rest.partition(":")
        if owner_alive({"host": host, "pid": pid, "start": start or None}) is False:
            instance.report_run_failed(
                run, message=f"the process running this run (pid {pid} on {host}) ended without finishing it (killed?)"
            )
            failed.append(run.run_id)
    return failed


def launch(
    job_name: str, run_config: dict[str, Any], tags: dict[str, str], instance: DagsterInstance | None = None
) -> LaunchResult:
    """Create the run as the code location's, execute it here, and return how it ended."""
    instance = instance or DagsterInstance.get()
    fail_dead_runs(instance)
    workdir = _working_directory()
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=MODULE, working_directory=workdir),
        location_name=LOCATION_NAME,
    )
    # The origins a webserver loading workspace.yaml gives the job, built without loading the
    # location's snapshot (a test checks they equal the loaded location's).
    remote_origin = RemoteJobOrigin(RemoteRepositoryOrigin(origin, _REPOSITORY), job_name)
    recon_job = ReconstructableRepository.for_module(MODULE, "defs", working_directory=workdir).get_reconstructable_job(
        job_name
    )
    job_def = recon_job.get_definition()
    if PARTITION in tags and job_def.partitioned_config is not None:
        # What the UI adds for a partition: its tags, per dimension for a multi-partition.
        tags = {**job_def.partitioned_config.get_tags_for_partition_key(tags[PARTITION]), **tags}
    config = {**run_config, "loggers": {"progress": {}}}
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=config,
        tags={**job_def.run_tags, **tags, PROCESS: _process_tag(this_process())},
        remote_job_origin=remote_origin,
        job_code_origin=recon_job.get_python_origin(),
    )
    result = execute_run(recon_job, run, instance)
    return _outcome(instance, run.run_id, result.success)


if __name__ == "__main__":  # `./dev ui`: the same home as the CLI's runs
    print(ensure_dagster_home())
