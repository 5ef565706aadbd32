"""A real dagster-webserver on loopback, for launching runs through GraphQL as the UI does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from dagster_graphql import DagsterGraphQLClient

from ultra_ops.defs.shared.launch import local_instance_yaml
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import REPO

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


class UI:
    """GraphQL calls as the UI makes them, against a webserver already serving on `port`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=port)

    def query(self, text: str, **variables: object) -> dict:
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/graphql", json={"query": text, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def job_runs(self, job: str) -> list[dict]:
        """The runs the UI shows on the job's Runs tab (the job as the ultra_ops code location has it)."""
        data = self.query(
            _JOB_RUNS,
            selector={"pipelineName": job, "repositoryName": "__repository__", "repositoryLocationName": "ultra_ops"},
        )
        return data["pipelineOrError"]["runs"]

    def partition_tags(self, job: str, partition: str) -> dict[str, str]:
        """The tags the launchpad puts on a run of `job` for `partition`."""
        data = self.query(
            _PARTITION_TAGS,
            repositorySelector={"repositoryName": "__repository__", "repositoryLocationName": "ultra_ops"},
            partitionSetName=f"{job}_partition_set",
            partition=partition,
        )
        return {t["key"]: t["value"] for t in data["partitionSetOrError"]["partition"]["tagsOrError"]["results"]}

    def launch_partition(
        self, job: str, partition: str, run_config: dict | None = None, tags: dict[str, str] | None = None
    ) -> str:
        """Launch as the launchpad does once a partition is picked: with the partition's tags."""
        return self.client.submit_job_execution(
            job, run_config=run_config or {}, tags={**self.partition_tags(job, partition), **(tags or {})}
        )

    def reexecute(self, run_id: str, strategy: str = "FROM_FAILURE") -> str:
        data = self.query(_REEXECUTE, params={"parentRunId": run_id, "strategy": strategy})
        result = data["launchPipelineReexecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def wait(self, run_id: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get_run_status(run_id).value
            if status in TERMINAL:
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish within {timeout} s")


class Webserver(UI):
    """A dagster-webserver of the test's own on a SQLite instance, loading the code in-process."""

    def __init__(
        self,
        dagster_home: Path,
        env: dict[str, str] | None = None,
        *,
        instance_yaml: str | None = None,
        queue: bool = False,
    ) -> None:
        self.home = dagster_home
        # The instance the CLI writes; with `queue`, its run queue as `./dev ui` has it (runs wait for
        # start_daemon), else a run coordinator that starts runs at once, without a daemon.
        (dagster_home / "dagster.yaml").write_text(
            local_instance_yaml(dagster_home)
            if queue
            else local_instance_yaml(dagster_home, queue=False)
            + (
                instance_yaml
                or ("run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n")
            )
        )
        self.port = free_port()
        self.env = {**os.environ, "DAGSTER_HOME": str(dagster_home), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None

    def start_daemon(self) -> None:
        """dagster-daemon on the same instance: it dequeues queued runs and launches them."""
        exe = Path(sys.executable).parent / "dagster-daemon"
        self.daemon_log = open(self.home / "daemon.log", "wb")
        self.daemon = subprocess.Popen(
            [str(exe), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=self.env,
            stdout=self.daemon_log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> Webserver:
        exe = Path(sys.executable).parent / "dagster-webserver"
        self.log = open(self.home / "webserver.log", "wb")
        self.proc = subprocess.Popen(
            [str(exe), "-h", "127.0.0.1", "-p", str(self.port), "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dagster-webserver exited: " + (self.home / "webserver.log").read_text()[-2000:])
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("dagster-webserver did not answer within 90 s")
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in (self.daemon, self.proc):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.log.close()
        if self.daemon:
            self.daemon_log.close()


_JOB_RUNS = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs(limit: 100) { runId status tags { key value } } }
  }
}"""

_PARTITION_TAGS = """
query PartitionTags($repositorySelector: RepositorySelector!, $partitionSetName: String!, $partition: String!) {
  partitionSetOrError(repositorySelector: $repositorySelector, partitionSetName: $partitionSetName) {
    __typename
    ... on PartitionSet {
      partition(partitionName: $partition) { tagsOrError { __typename ... on PartitionTags { results { key value } } } }
    }
  }
}"""

_REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
