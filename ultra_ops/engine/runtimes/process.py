"""The process runtime: the environment's services as local processes (a Procfile with health URLs).

Each process runs in its own session, so it outlives the Dagster run or CLI command that started
it. Its pid file (state_dir/run/<name>.pid) records the pid together with the process start time
from /proc, so that a pid the kernel reused for an unrelated process is never signalled.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ultra_ops.engine import procfs
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.crash_points import crash_point
from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import RuntimeFailure
from ultra_ops.engine.files import open_private_append, private_dir
from ultra_ops.engine.health import answer, wait_until_healthy
from ultra_ops.engine.hosts.names import as_configured
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.runtimes import ServiceStatus
from ultra_ops.engine.runtimes.service_env import service_base_env
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment, ProcessSpec
from ultra_ops.engine.versions import VERSION_KEY

httpx = lazy_module("httpx")

_POLL_S = 0.1
_OUTPUT_LINES = 20

# Popen objects of the children this Python process started. The services are meant to outlive
# us, but while we live (a Dagster daemon, a code server) an exited child stays a zombie until it
# is waited for: polling these reaps them.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def _reap() -> None:
    with _children_lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


def _alive(pid: int, start_time: int | None) -> bool:
    """Whether `pid` is still the process we started (not exited, not a zombie, not reused)."""
    _reap()
    return procfs.is_alive(pid, start_time)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int, start: int = 0) -> list[str]:
    """The last `lines` lines of a file after byte `start`, reading at most its last 256 KiB."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start if start <= size else 0, size - 256 * 1024))
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:] if lines > 0 else []


class ProcessRuntime:
    """Runtime for `runtime = "process"` environments."""

    def __init__(self, env: Environment, *, log: Log | None = None, redact: Redactor | None = None) -> None:
        self.env = env
        self.log = log or NullLog()
        self.redact = redact or Redactor.for_environment(env)

    # -- paths and the environment a process gets -------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.env.state_dir / "run"

    def pid_file(self, spec: ProcessSpec) -> Path:
        return self.run_dir / f"{spec.name}.pid"

    def output_file(self, spec: ProcessSpec) -> Path:
        return self.env.log_dir / f"{spec.name}.out"

    def process_env(self, spec: ProcessSpec, version: str) -> dict[str, str]:
        """The full environment of a service process; later sources win.

        A fixed allowlist of non-secret variables of ours (service_env.py: never a value from the
        operator's shell for a key the env file is meant to hold), then the env file, then the
        process table's env and secret_env, then what ultra_ops decides (PORT, ULTRA_VERSION,
        ULTRA_ENVIRONMENT, ULTRA_LOG_DIR, PG*, REDIS_*). Secrets reach the process only here, never
        on its command line.
        """
        env = service_base_env()
        env.update(read_env_file(self.env.env_file))
        env.update(spec.env)
        # A secret reaches the process only where its variable is set (authentication off otherwise).
        env.update({name: os.environ[ours] for name, ours in spec.secret_env.items() if os.environ.get(ours)})
        if spec.port is not None:
            env["PORT"] = str(spec.port)
        env[VERSION_KEY] = version
        env["ULTRA_ENVIRONMENT"] = self.env.name
        env["ULTRA_LOG_DIR"] = str(self.env.log_dir)
        env.update(self.env.database.libpq_env())
        redis = self.env.redis
        if redis is not None:
            env["REDIS_URL"] = redis.url
            if redis.username:
                env["REDIS_USERNAME"] = redis.username
            password = redis.password()
            if password:
                env["REDIS_PASSWORD"] = password
        # Output reaches <name>.out as it happens, not when a crashing Python flushes its buffers.
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # -- pid files --------------------------------------------------------------------------

    def _read_pid(self, spec: ProcessSpec) -> dict[str, Any] | None:
        try:
            data = json.loads(self.pid_file(spec).read_text())
            int(data["pid"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            # A torn or foreign file: we cannot trust its pid, so never signal it.
            self.log.warning(f"ignoring unreadable pid file {self.pid_file(spec)}")
            return None
        return data

    def _write_pid(self, spec: ProcessSpec, record: dict[str, Any]) -> None:
        private_dir(self.run_dir)
        path = self.pid_file(spec)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _running_pid(self, spec: ProcessSpec) -> tuple[int, dict[str, Any]] | None:
        record = self._read_pid(spec)
        if record is None:
            return None
        pid = int(record["pid"])
        if _alive(pid, record.get("start_time")):
            return pid, record
        return None

    # -- Runtime interface ------------------------------------------------------------------

    def build(self, version: str) -> None:
        """Nothing to build for local processes; check that every program can be started."""
        for spec in self.env.processes:
            program = spec.command[0]
            if os.sep in program:
                path = Path(program) if os.path.isabs(program) else self.env.root / program
                ok = path.is_file() and os.access(path, os.X_OK)
            else:
                ok = shutil.which(program) is not None
            if not ok:
                raise RuntimeFailure(f"process {spec.name}: program {program!r} not found or not executable")
        self.log.info(f"process runtime: {len(self.env.processes)} program(s) present for {version}")

    def push(self, version: str, registry: str) -> None:
        self.log.info(f"process runtime: nothing to push for {version} (registry {registry} unused)")

    def pull(self, version: str) -> None:
        self.log.info(f"process runtime: nothing to pull for {version}")

    def up(self, version: str) -> None:
        """Stop the running processes, then start every process at `version`."""
        self.down()
        started: list[ProcessSpec] = []
        try:
            for spec in self.env.processes:
                if spec.port is not None and _port_open(spec.port):
                    # Another program answering on the port would pass the health check for us.
                    raise RuntimeFailure(
                        f"process {spec.name}: port {spec.port} is already in use by a process ultra_ops did not start"
                    )
                self._start(spec, version)
                started.append(spec)
                crash_point(f"started:{spec.name}")  # tests: interrupted with the environment half started
        except BaseException:
            for spec in started:
                self._stop(spec)
            raise

    def _start(self, spec: ProcessSpec, version: str) -> None:
        private_dir(self.env.log_dir)
        cwd = self.env.root if self.env.root.is_dir() else None
        # The service's output may carry what it was told: 0600 from creation, as the files it
        # writes itself (umask 077, set in the child by Popen without running Python code there).
        with open(open_private_append(self.output_file(spec)), "ab") as out:
            out.write(
                f"--- {local_time(datetime.now(UTC), self.env.timezone)} starting {spec.name} {version}\n".encode()
            )
            out.flush()
            # Where this start's output begins: a failure report shows this run's lines only.
            offset = out.tell()
            try:
                proc = subprocess.Popen(
                    list(spec.command),
                    env=self.process_env(spec, version),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    umask=0o077,
                )
            except OSError as exc:
                raise RuntimeFailure(f"process {spec.name}: cannot start {spec.command[0]!r}: {exc.strerror}") from None
        with _children_lock:
            _children[proc.pid] = proc
        self._write_pid(
            spec,
            {
                "pid": proc.pid,
                "start_time": procfs.start_time(proc.pid),
                "version": version,
                "port": spec.port,
                "started_at": time.time(),
                "output_offset": offset,
            },
        )
        self.log.info(f"started {spec.name} {version} (pid {proc.pid})")

    def down(self) -> None:
        """Stop every process: SIGTERM to its process group, SIGKILL after its stop timeout."""
        for spec in self.env.processes:
            self._stop(spec)
            crash_point(f"stopped:{spec.name}")  # tests: killed with the environment half stopped

    def _stop(self, spec: ProcessSpec) -> None:
        running = self._running_pid(spec)
        if running is None:
            self.pid_file(spec).unlink(missing_ok=True)
            return
        pid, record = running
        start_time = record.get("start_time")
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + spec.stop_timeout_s
        while time.monotonic() < deadline and _alive(pid, start_time):
            time.sleep(_POLL_S)
        if _alive(pid, start_time):
            self.log.warning(f"{spec.name} (pid {pid}) ignored SIGTERM for {spec.stop_timeout_s:g}s: killing it")
            self._signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(pid, start_time):
                time.sleep(_POLL_S)
            if _alive(pid, start_time):
                raise RuntimeFailure(f"process {spec.name} (pid {pid}) survived SIGKILL")
        else:
            self.log.info(f"stopped {spec.name} (pid {pid})")
        # Helpers the service left behind in its group would keep its port or files busy.
        for member in procfs.group_members(pid):
            try:
                os.kill(member, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.pid_file(spec).unlink(missing_ok=True)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        # The service leads its own session, so its process group id is its pid.
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def service_pids(self) -> dict[str, int]:
        """The pid of each running service (for performance verification's /proc readings)."""
        pids = {}
        for spec in self.env.processes:
            running = self._running_pid(spec)
            if running is not None:
                pids[spec.name] = running[0]
        return pids

    def status(self, *, usage: bool = True) -> list[ServiceStatus]:
        result = []  # usage from /proc costs nothing: always read
        for spec in self.env.processes:
            running = self._running_pid(spec)
            if running is None:
                result.append(ServiceStatus(spec.name, False, "not running", state="exited"))
                continue
            pid, record = running
            detail = f"pid {pid}, version {record.get('version')}"
            if spec.port is not None:
                detail += f", port {spec.port}"
            stat = procfs.process_stat(pid)
            cpu, memory = (round(stat.cpu_seconds, 2), stat.resident_bytes) if stat else (None, None)
            result.append(ServiceStatus(spec.name, True, detail, state="up", cpu_seconds=cpu, memory_bytes=memory))
        return result

    def logs(self, tail: int = 100) -> str:
        """The last `tail` lines of each process's output and of its own log file, redacted."""
        parts = []
        for spec in self.env.processes:
            for path in (self.output_file(spec), self.env.log_dir / f"{spec.name}.log"):
                if path.exists():
                    parts.append(f"==> {path} <==")
                    parts.extend(_tail(path, tail))
        return self.redact("\n".join(parts))

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll each health URL until it answers 200; fail at once if a process exits meanwhile."""
        specs = {spec.name: spec for spec in self.env.processes}
        # Read now: once a process has died, its pid file no longer counts as its own.
        offsets = {name: int((self._read_pid(spec) or {}).get("output_offset") or 0) for name, spec in specs.items()}

        def healthy(name: str) -> None:
            if specs[name].health_url is not None:
                self.log.info(f"{name} is healthy ({specs[name].health_url})")

        with httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0), event_hooks=as_configured(self.env)) as client:

            def probe(spec: ProcessSpec) -> str | None:
                if self._running_pid(spec) is None:
                    lines = _tail(self.output_file(spec), _OUTPUT_LINES, offsets[spec.name])
                    output = "\n".join(lines) if lines else "(no output)"
                    raise RuntimeFailure(
                        self.redact(f"process {spec.name} exited before it became healthy; last output:\n{output}")
                    )
                return None if spec.health_url is None else answer(client, spec.health_url)

            probes = {name: functools.partial(probe, spec) for name, spec in specs.items()}
            unhealthy = wait_until_healthy(probes, timeout_s, poll_s=_POLL_S * 2, on_healthy=healthy)
        if unhealthy is not None:
            name, problem = unhealthy
            raise RuntimeFailure(
                self.redact(f"process {name} not healthy after {timeout_s:g}s at {specs[name].health_url}: {problem}")
            )
