"""A real dagster-webserver on loopback, for launching runs through GraphQL as the UI does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import REPO, free_port
from dagster_graphql import DagsterGraphQLClient

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


class Webserver:
    def __init__(self, dagster_home: Path, env: dict[str, str] | None = None) -> None:
        self.home = dagster_home
        # Runs start at once, without a daemon to dequeue them.
        (dagster_home / "dagster.yaml").write_text(
            "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
            "telemetry:\n  enabled: false\n")
        self.port = free_port()
        self.env = {**os.environ, "DAGSTER_HOME": str(dagster_home), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Webserver:
        exe = Path(sys.executable).parent / "dagster-webserver"
        self.log = open(self.home / "webserver.log", "wb")
        self.proc = subprocess.Popen(
            [str(exe), "-h", "127.0.0.1", "-p", str(self.port), "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
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

    def wait(self, run_id: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get_run_status(run_id).value
            if status in TERMINAL:
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish within {timeout} s")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
