"""The production platform run for real: the shipped dagster.yaml on PostgreSQL, with the
ultra_ops gRPC code server, dagster-webserver and dagster-daemon as `./dev platform` starts them
(only the run launcher swapped for one that needs no Docker engine). Runs are launched through
GraphQL as the UI launches them, and by the daemon's schedule ticks, and go through the queue: one
run per environment at a time, environments side by side."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus

from ultra_ops.engine.settings import load_settings
from ultra_ops.platform.instance import local_instance, production_instance
from ultra_ops_tests.support.platform_stack import RunningPlatform, running_platform
from ultra_ops_tests.support.services import PG, REPO

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


@pytest.mark.unit
def test_local_instance_differs_from_production_only_in_the_run_launcher() -> None:
    production, local = production_instance(), local_instance()
    assert production["run_launcher"]["class"] == "DockerRunLauncher"
    assert local["run_launcher"]["class"] == "DefaultRunLauncher"
    assert {k: v for k, v in local.items() if k != "run_launcher"} == {
        k: v for k, v in production.items() if k != "run_launcher"
    }


def test_production_dagster_yaml_loads_on_postgres(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file the compose stack mounts, unchanged, on this machine's PostgreSQL."""
    from dagster_docker import DockerRunLauncher
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    for name, value in (
        ("DAGSTER_PG_HOST", PG["host"]),
        ("DAGSTER_PG_USER", PG["user"]),
        ("DAGSTER_PG_PASSWORD", ""),
        ("DAGSTER_PG_DB", pg_database),
        # docker-compose.yml sets these for the run launcher's networks.
        ("ULTRA_OPS_PLATFORM_NETWORK", "ultra_ops_platform"),
        ("ULTRA_OPS_DEPLOY_NETWORK", "ultra_ops_docker_deploy"),
    ):
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_launcher, DockerRunLauncher)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import TickStatus

        retention = instance.get_tick_retention_settings(InstigatorType.SENSOR)  # ticks do not pile up
        assert (retention[TickStatus.SKIPPED], retention[TickStatus.FAILURE], retention[TickStatus.SUCCESS]) == (
            7,
            30,
            90,
        )
        # Storage works: a run and its events written and read back through the production config.
        from dagster import job, op

        @op
        def noop() -> None:
            pass

        @job
        def probe() -> None:
            noop()

        result = probe.execute_in_process(instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.SUCCESS
        assert instance.all_logs(result.run_id)


@pytest.fixture(scope="module")
def tick() -> datetime:
    """When the hourly cache check ticks, once during the module: a minute far enough ahead for the
    stack to start and the other tests to run first (the last test waits for it)."""
    return (datetime.now(UTC) + timedelta(seconds=200)).replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, tick: datetime) -> Iterator[RunningPlatform]:
    schedule = f"""
[calendar]
hourly_cache_check = {{ minute = {tick.minute} }}

[calendar.automations]
hourly_cache_check_schedule = "running"
"""
    with running_platform(tmp_path_factory.mktemp("platform"), test_seconds=8, extra_config=schedule) as running:
        # development runs a release, deployed from the shell: recorded on the platform's instance.
        result = running.ops(
            "deploy", "--environment", "development", "--tag", "v1.0.0", "--skip-tests", "--skip-build"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        yield running


def _wait_status(instance: DagsterInstance, run_id: str, wanted: set[str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = instance.get_run_by_id(run_id).status.value
        if status in wanted:
            return status
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reached {wanted}")


@pytest.fixture
def instance(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    for key, value in platform.platform.env().items():
        if key.startswith("DAGSTER_"):
            monkeypatch.setenv(key, value)
    with DagsterInstance.from_config(str(platform.platform.home)) as instance:
        yield instance


def test_verify_launched_from_the_ui_succeeds(platform: RunningPlatform, instance: DagsterInstance) -> None:
    ui = platform.ui
    run_id = ui.launch_partition("verify_job", "development")
    assert ui.wait(run_id) == "SUCCESS", platform.platform.tail("daemon") + platform.platform.tail("code-server")
    run = instance.get_run_by_id(run_id)
    assert run.tags["ultra_ops/environment"] == "development"
    # The shell's deploy sits under its job beside the UI's runs: one instance, one history.
    deploys = ui.job_runs("deploy_job")
    assert any(
        r["status"] == "SUCCESS" and {"key": "ultra_ops/environment", "value": "development"} in r["tags"]
        for r in deploys
    )


def test_one_run_per_environment_through_the_queue(platform: RunningPlatform, instance: DagsterInstance) -> None:
    ui = platform.ui

    def form(tag: str) -> dict:
        return {"ops": {"deploy_plan": {"config": {"tag": tag, "skip_build": True}}}}

    staging_1 = ui.launch_partition("deploy_job", "staging", form("v1.0.0"))
    staging_2 = ui.launch_partition("deploy_job", "staging", form("v1.0.1"))
    development = ui.launch_partition("deploy_job", "development", form("v1.0.1"))
    # While one staging deploy runs, the other waits in the queue.
    _wait_status(instance, staging_1, {"STARTED", "SUCCESS", "FAILURE"})
    statuses = {instance.get_run_by_id(r).status.value for r in (staging_1, staging_2)}
    assert statuses != {"STARTED"}, "two staging deploys ran at once"
    for run_id in (staging_1, staging_2, development):
        assert _wait_status(instance, run_id, TERMINAL) == "SUCCESS", platform.platform.tail(
            "daemon"
        ) + platform.platform.tail("code-server")
    spans = {r: instance.get_run_stats(r) for r in (staging_1, staging_2, development)}
    first, second = sorted((spans[staging_1], spans[staging_2]), key=lambda s: s.start_time)
    other = spans[development]
    assert first.end_time <= second.start_time  # one staging run after the other
    assert any(other.start_time < s.end_time and s.start_time < other.end_time for s in (first, second)), (
        "environments did not run side by side"
    )
    settings = load_settings(platform.config)
    # The queue ran them in submission order: staging ends on the second tag.
    assert "ULTRA_VERSION=v1.0.1" in settings.environment("staging").env_file.read_text()
    assert "ULTRA_VERSION=v1.0.1" in settings.environment("development").env_file.read_text()
    production_limits = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_coordinator"]["config"]
    assert production_limits["tag_concurrency_limits"][0]["key"] == "ultra_ops/environment"


# Jobs whose form asks for what only the operator knows: who approves, which backup to pin.
NEEDS_INPUT = {"approve_job", "pin_job"}

_PARTITION_SETS = """
query ($r: RepositorySelector!) { repositoryOrError(repositorySelector: $r) { ... on Repository {
  partitionSets { name pipelineName partitionsOrError { ... on Partitions { results { name } } } } } } }"""
_PARTITION_CONFIG = """
query ($r: RepositorySelector!, $ps: String!, $p: String!) {
  partitionSetOrError(repositorySelector: $r, partitionSetName: $ps) { ... on PartitionSet {
    partition(partitionName: $p) { runConfigOrError { ... on PartitionRunConfig { yaml } } } } } }"""
_VALID = """
query ($s: PipelineSelector!, $c: RunConfigData!) {
  isPipelineConfigValid(pipeline: $s, runConfigData: $c, mode: "default") {
    __typename ... on RunConfigValidationInvalid { errors { message } } } }"""


def test_launchpad_needs_no_yaml_once_an_environment_is_picked(platform: RunningPlatform) -> None:
    """What the launchpad fills in for a picked partition is a valid run config as it stands."""
    ui, repo = platform.ui, {"repositoryName": "__repository__", "repositoryLocationName": "ultra_ops"}
    checked = set()
    for ps in ui.query(_PARTITION_SETS, r=repo)["repositoryOrError"]["partitionSets"]:
        partition = ps["partitionsOrError"]["results"][-1]["name"]
        text = ui.query(_PARTITION_CONFIG, r=repo, ps=ps["name"], p=partition)
        config = yaml.safe_load(text["partitionSetOrError"]["partition"]["runConfigOrError"]["yaml"]) or {}
        result = ui.query(_VALID, s={**repo, "pipelineName": ps["pipelineName"]}, c=config)["isPipelineConfigValid"]
        valid = result["__typename"] == "PipelineConfigValidationValid"
        assert valid != (ps["pipelineName"] in NEEDS_INPUT), (ps["pipelineName"], result)
        checked.add(ps["pipelineName"])
    assert {"deploy_job", "verify_job", "rollback_job", "backup_job", "stop_job", "recover_job"} <= checked


def test_dagster_storage_backup_from_the_ui(platform: RunningPlatform, tmp_path: Path) -> None:
    """platform_backup_job dumps the platform's own PostgreSQL: its runs table is in the dump."""
    import subprocess

    folder = tmp_path / "platform_backups"
    config = {"ops": {"backup_dagster_storage": {"config": {"folder": str(folder), "keep": 3}}}}
    run_id = platform.ui.client.submit_job_execution("platform_backup_job", run_config=config)
    assert platform.ui.wait(run_id) == "SUCCESS", platform.platform.tail("code-server")
    (dump,) = folder.glob("dagster-*.dump")
    listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and " runs " in listing.stdout and platform.platform.database in listing.stdout


def test_status_reports_processes_heartbeats_and_queue(platform: RunningPlatform) -> None:
    from ultra_ops.platform.stack import instance_health

    report = platform.platform.status()
    assert all(report[name] for name in ("code-server", "webserver", "daemon")) and report["location_loaded"]
    health = instance_health(platform.platform)
    # Every daemon of the instance beats, among them the queue's. A daemon busy on a loaded machine
    # (the scheduler's iteration) can beat late: one fresh beat from each within two minutes shows
    # it alive, where one snapshot's age would judge a slow iteration dead.
    assert "QUEUED_RUN_COORDINATOR" in health["heartbeat_age_s"]
    deadline = time.monotonic() + 120
    while max(health["heartbeat_age_s"].values()) >= 60 and time.monotonic() < deadline:
        time.sleep(1)
        health = instance_health(platform.platform)
    assert max(health["heartbeat_age_s"].values()) < 60, health["heartbeat_age_s"]
    assert health["queued_runs"] == sum(health["queued_by_environment"].values())


def test_a_schedule_tick_queues_behind_a_ui_launch_for_its_environment(
    platform: RunningPlatform, instance: DagsterInstance, tick: datetime
) -> None:
    """The daemon's tick of hourly_cache_check_schedule submits one run per environment through the
    same queue: the staging run waits for the staging deploy launched from the UI just before."""
    from dagster import DagsterEventType, RunsFilter

    if (tick - datetime.now(UTC)).total_seconds() < 6:
        pytest.skip(f"the module's earlier tests ran past the tick at {tick:%H:%M} UTC")
    while (tick - datetime.now(UTC)).total_seconds() > 5:  # the deploy is under way when the tick comes
        time.sleep(0.2)
    form = {"ops": {"deploy_plan": {"config": {"tag": "v1.0.2", "skip_build": True}}}}
    deploy = platform.ui.launch_partition("deploy_job", "staging", form)
    by_tick = RunsFilter(tags={"dagster/schedule_name": "hourly_cache_check_schedule"})
    deadline = time.monotonic() + 120
    while len(ticked := instance.get_runs(filters=by_tick)) < 2:
        assert time.monotonic() < deadline, "the schedule did not tick: " + platform.platform.tail("daemon")
        time.sleep(0.5)
    runs = {r.tags["ultra_ops/environment"]: r.run_id for r in ticked}
    assert set(runs) == {"development", "staging"}
    for run_id in (deploy, *runs.values()):
        assert _wait_status(instance, run_id, TERMINAL) == "SUCCESS", platform.platform.tail("code-server")
    for run_id in runs.values():  # through the queue, with the environment's tag from submission on
        enqueued = instance.get_records_for_run(run_id, of_type=DagsterEventType.PIPELINE_ENQUEUED).records
        assert enqueued
    staging, mine = instance.get_run_stats(runs["staging"]), instance.get_run_stats(deploy)
    # The tick came while the deploy ran (or waited to run, first in the queue): it ran after it.
    assert staging.start_time >= mine.end_time


def test_the_cli_records_on_the_running_platform_without_set_up(platform: RunningPlatform) -> None:
    """While the platform runs, its home is where a command records: found from platform.json with
    the storage it names, so neither DAGSTER_HOME nor the four DAGSTER_PG_* need setting by hand."""
    import os

    from ultra_ops.platform.attach import platform_environment, running_platform
    from ultra_ops_tests.support.cli import run_cli

    home = platform.platform.home
    assert running_platform(home).url == platform.platform.url
    added = platform_environment({}, home=home)  # what `./dev ops` gets with nothing set
    assert added["DAGSTER_HOME"] == str(home) and added["DAGSTER_PG_DB"] == platform.platform.database
    assert platform_environment({"DAGSTER_PG_DB": "mine"}, home=home).get("DAGSTER_PG_DB") is None  # set ones win
    # The platform's home named, its storage not: filled in from the platform's record.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PG_")} | {"DAGSTER_HOME": str(home)}
    result = run_cli("stop", environment="development", config=platform.config, env=env)
    assert result.returncode == 0, result.stderr
    (stop,) = platform.ui.job_runs("stop_job")
    assert stop["status"] == "SUCCESS"
