"""The platform's three processes on this machine: the ultra_ops gRPC code server, dagster-webserver
and dagster-daemon, on a PostgreSQL database of their own.

Each process leads its own session (it outlives the command that started it) and is recorded in
<home>/<name>.pid with its kernel start time, so a reused pid is never signalled. Logs go to
<home>/<name>.log. The runs the code server starts (DefaultRunLauncher) are in its process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ultra_ops.defs.shared.tags import ENVIRONMENT
from ultra_ops.engine import procfs
from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.owners import process_start
from ultra_ops.platform.instance import REPO, local_instance_text, local_workspace_text

httpx = lazy_module("httpx")
psycopg = lazy_module("psycopg")

SERVICES = ("code-server", "webserver", "daemon")
_BIN = Path(sys.executable).parent


class PlatformError(UltraOpsError):
    pass


@dataclass
class Platform:
    home: Path  # DAGSTER_HOME: the generated dagster.yaml and workspace.yaml, pid and log files
    database: str = "ultra_ops_dagster"
    port: int = 3000  # the UI
    code_port: int = 4000
    pg_host: str = "127.0.0.1"
    pg_user: str = "postgres"
    pg_password: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. ULTRA_OPS_CONFIG for the code location

    @classmethod
    def from_environment(cls, home: Path, **overrides: object) -> Platform:
        """Storage from the production variables (DAGSTER_PG_*) where set, this machine's defaults else."""
        env = os.environ
        values = {
            "pg_host": env.get("DAGSTER_PG_HOST", "127.0.0.1"),
            "pg_user": env.get("DAGSTER_PG_USER", "postgres"),
            "pg_password": env.get("DAGSTER_PG_PASSWORD", ""),
            "database": env.get("DAGSTER_PG_DB", "ultra_ops_dagster"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(home=home, **values)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What every platform process (and a CLI recording on the same instance) runs with: the
        operator's environment, as compose passes it, plus the instance's home and storage."""
        return {
            **os.environ,
            **self.extra_env,
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_HOST": self.pg_host,
            "DAGSTER_PG_USER": self.pg_user,
            "DAGSTER_PG_PASSWORD": self.pg_password,
            "DAGSTER_PG_DB": self.database,
        }

    # -- files -----------------------------------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.home / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def write_files(self) -> None:
        private_dir(self.home)
        (self.home / "dagster.yaml").write_text(local_instance_text())
        (self.home / "workspace.yaml").write_text(local_workspace_text(self.code_port))
        (self.home / "platform.json").write_text(
            json.dumps(
                {
                    "port": self.port,
                    "code_port": self.code_port,
                    "database": self.database,
                    "pg_host": self.pg_host,
                    "pg_user": self.pg_user,
                }
            )
        )

    @classmethod
    def recorded(cls, home: Path) -> Platform | None:
        """The platform last started from `home`, with the ports and database it was started with."""
        try:
            saved = json.loads((home / "platform.json").read_text())
        except (OSError, ValueError):
            return None
        return cls.from_environment(home, **saved)

    def ensure_database(self) -> None:
        with psycopg.connect(
            host=self.pg_host,
            port=5432,
            user=self.pg_user,
            password=self.pg_password or None,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone():
                conn.execute(f'CREATE DATABASE "{self.database}"')

    # -- processes -------------------------------------------------------------------------------
    def _argv(self, name: str) -> list[str]:
        workspace = str(self.home / "workspace.yaml")
        return {
            "code-server": [
                str(_BIN / "dagster"),
                "code-server",
                "start",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.code_port),
                "-m",
                "ultra_ops.definitions",
                "--location-name",
                "ultra_ops",
            ],
            "webserver": [str(_BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), "-w", workspace],
            "daemon": [str(_BIN / "dagster-daemon"), "run", "-w", workspace],
        }[name]

    def pid(self, name: str) -> int | None:
        """The pid of the running service `name`, None when it is not running (or the pid was reused)."""
        try:
            record = json.loads(self._pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        # A record without a start time (no /proc) cannot tell a reused pid: not ours to signal.
        start = record["start"]
        return record["pid"] if start is not None and procfs.is_alive(record["pid"], start) else None

    def _spawn(self, name: str) -> None:
        if self.pid(name):
            return
        with open(self.log_file(name), "ab") as log:
            proc = subprocess.Popen(
                self._argv(name),
                cwd=REPO,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid_file(name).write_text(json.dumps({"pid": proc.pid, "start": process_start(proc.pid)}))

    def start(self, timeout_s: float = 180) -> None:
        """Start whatever is not running and wait until the UI serves the ultra_ops code location."""
        self.write_files()
        self.ensure_database()
        self._spawn("code-server")
        self._wait(lambda: self._port_open(self.code_port), "code-server", timeout_s)
        self._spawn("webserver")
        self._spawn("daemon")
        self._wait(self.location_loaded, "webserver", timeout_s)

    def _wait(self, ready, name: str, timeout_s: float) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for service in SERVICES:
                if self._pid_file(service).exists() and self.pid(service) is None:
                    raise PlatformError(
                        f"{service} exited; the end of {self.log_file(service)}:\n" + self.tail(service)
                    )
            if ready():
                return
            time.sleep(0.3)
        raise PlatformError(f"{name} was not ready within {timeout_s:g} s; see {self.log_file(name)}")

    @staticmethod
    def _port_open(port: int) -> bool:
        import socket

        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def tail(self, name: str, chars: int = 3000) -> str:
        try:
            return self.log_file(name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def graphql(self, query: str, **variables: object) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise PlatformError(f"GraphQL error: {body['errors']}")
        return body["data"]

    def location_loaded(self) -> bool:
        """Whether the UI answers and has loaded the ultra_ops code location from the code server."""
        try:
            data = self.graphql(_LOCATIONS)
        except (httpx.HTTPError, PlatformError):
            return False
        entries = data["workspaceOrError"].get("locationEntries", [])
        return any(
            e["name"] == "ultra_ops" and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
            for e in entries
        )

    def stop(self, timeout_s: float = 30) -> list[str]:
        """SIGTERM each service's process group (runs in progress get it too: a deploy rolls back),
        SIGKILL what is left after `timeout_s`. Returns the services that were running."""
        stopped = []
        # The daemon first, so nothing new is launched while the rest stop; then the others together.
        for names in (("daemon",), ("webserver", "code-server")):
            pids = {name: self.pid(name) for name in names}
            for name, pid in pids.items():
                if pid:
                    stopped.append(name)
                    _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while any(self.pid(n) for n in names) and time.monotonic() < deadline:
                time.sleep(0.1)
            for name, pid in pids.items():
                if pid and self.pid(name):
                    _signal_group(pid, signal.SIGKILL)
                self._pid_file(name).unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, object]:
        """Each service's pid (None: not running), and from the instance: daemon heartbeats and queue depth."""
        report: dict[str, object] = {name: self.pid(name) for name in SERVICES}
        report["url"] = self.url
        report["location_loaded"] = bool(self.pid("webserver")) and self.location_loaded()
        try:
            report.update(instance_health(self))
        except Exception as exc:  # noqa: BLE001 - status must answer while the storage is down
            report["storage_error"] = str(exc).splitlines()[0]
        return report


def instance_health(platform: Platform) -> dict[str, object]:
    """What to watch: seconds since each daemon's last heartbeat, and runs waiting in the queue."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    saved = dict(os.environ)
    os.environ.update(platform.env())
    try:
        with DagsterInstance.from_config(str(platform.home)) as instance:
            now = time.time()
            heartbeats = {
                kind: round(now - beat.timestamp, 1) for kind, beat in instance.get_daemon_heartbeats().items()
            }
            queued: dict[str, int] = {}
            for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED]), limit=1000):
                env = run.tags.get(ENVIRONMENT, "(none)")
                queued[env] = queued.get(env, 0) + 1
            in_progress = instance.get_runs_count(
                RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {
        "heartbeat_age_s": heartbeats,
        "queued_runs": sum(queued.values()),
        "queued_by_environment": queued,
        "runs_in_progress": in_progress,
    }


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_LOCATIONS = """
query { workspaceOrError { __typename ... on Workspace {
  locationEntries { name locationOrLoadError { __typename } } } } }"""
