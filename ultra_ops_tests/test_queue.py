"""Runs through the queue, as the production instance runs them: the QueuedRunCoordinator of the
shipped dagster.yaml, a real dagster-daemon dequeuing, runs launched through GraphQL as the UI
launches them. One run per environment at a time; environments side by side."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml
from conftest import REPO, write_multi_config
from dagster import DagsterInstance, DagsterRunStatus

from ultra_ops.cli import main
from ultra_ops.engine.settings import load_settings


def _queue_section() -> str:
    """The run coordinator of the production dagster.yaml, unchanged."""
    production = yaml.safe_load((REPO / "dagster.yaml").read_text())
    return yaml.safe_dump({"run_coordinator": production["run_coordinator"]})


def _wait_status(instance: DagsterInstance, run_id: str, wanted: set[str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = instance.get_run_by_id(run_id).status.value
        if status in wanted:
            return status
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reached {wanted}")


def test_one_run_per_environment_through_the_queue(tmp_path: Path, pg_databases: dict[str, str],
                                                  redis_prefix: str, dagster_home: Path) -> None:
    from webserver import Webserver

    # Development and staging: production would wait for its promotion gate, not for the queue.
    databases = {env: pg_databases[env] for env in ("development", "staging")}
    config = write_multi_config(tmp_path, databases, redis_prefix=redis_prefix)
    # Each deploy's tests take 8 s: long enough to see what runs beside what, also on a loaded machine.
    slow = f'test_command = ["{sys.executable}", "-c", "import time; time.sleep(8)"]\n'
    config.write_text(config.read_text().replace("[defaults]\n", "[defaults]\n" + slow, 1))
    settings = load_settings(config)
    for env in databases:
        assert main(["init", "--environment", env, "--config", str(config)]) == 0
    form = {"ops": {"deploy_plan": {"config": {"tag": "v1.0.0", "skip_build": True}}}}
    try:
        with Webserver(dagster_home, env={"ULTRA_OPS_CONFIG": str(config)}, instance_yaml=_queue_section()) as web, \
                DagsterInstance.from_config(str(dagster_home)) as instance:
            staging_1 = web.launch_partition("deploy_job", "staging", form)
            development = web.launch_partition("deploy_job", "development", form)
            for run_id, env in ((staging_1, "staging"), (development, "development")):
                run = instance.get_run_by_id(run_id)
                assert run.status == DagsterRunStatus.QUEUED  # no daemon yet: nothing has left the queue
                assert run.tags["ultra_ops/environment"] == env
            web.start_daemon()
            assert _wait_status(instance, staging_1, {"STARTED", "SUCCESS", "FAILURE"}) == "STARTED"
            staging_2 = web.launch_partition(
                "deploy_job", "staging", {"ops": {"deploy_plan": {"config": {"tag": "v1.0.1", "skip_build": True}}}})
            waiting = instance.get_run_by_id(staging_2)
            assert waiting.status == DagsterRunStatus.QUEUED and waiting.tags["ultra_ops/environment"] == "staging"
            for run_id in (staging_1, development, staging_2):
                assert _wait_status(instance, run_id, {"SUCCESS", "FAILURE", "CANCELED"}) == "SUCCESS", \
                    (dagster_home / "daemon.log").read_text()[-3000:]
            spans = {r: instance.get_run_stats(r) for r in (staging_1, development, staging_2)}
    finally:
        for env in databases:
            main(["stop", "--environment", env, "--config", str(config)])
    first, second, other = spans[staging_1], spans[staging_2], spans[development]
    assert first.end_time <= second.start_time  # one staging run after the other
    assert first.start_time < other.end_time and other.start_time < first.end_time  # environments side by side
    for env, version in (("staging", "v1.0.1"), ("development", "v1.0.0")):
        env_file = settings.environment(env).env_file.read_text()
        assert f"ULTRA_VERSION={version}" in env_file
