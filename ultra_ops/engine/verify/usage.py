"""Server resources of the services and folders (the document's "CPU, memory, disk"):
CPU share, resident memory and open files of each service process from /proc (process runtime)
or `docker stats --no-stream` (compose), and disk headroom of the data, log and backup folders.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from ultra_ops.engine import procfs
from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.runtimes.compose_status import docker_stats_rows
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.settings.verify import PerformanceSettings
from ultra_ops.engine.verify.report import CheckResult

_MB = 1024 * 1024


@dataclass(frozen=True)
class ProcessUsage:
    cpu_seconds: float
    memory_bytes: int
    open_files: int


def read_proc(pid: int) -> ProcessUsage | None:
    """CPU time, resident memory and open file descriptors of a process, from /proc."""
    stat, files = procfs.process_stat(pid), procfs.open_files(pid)
    if stat is None or files is None:
        return None
    return ProcessUsage(stat.cpu_seconds, stat.resident_bytes, files)


class CpuWindow:
    """CPU share of each service over the verification: a /proc reading at the start and at the end."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = time.monotonic()
        self.first = {name: read_proc(pid) for name, pid in pids.items()}

    def results(self, perf: PerformanceSettings) -> list[CheckResult]:
        wall = max(time.monotonic() - self.start, 1e-3)
        results = []
        for name, pid in self.pids.items():
            before, now = self.first.get(name), read_proc(pid)
            if before is None or now is None:
                results.append(CheckResult(f"resources {name}", "resources", False, 0.0, 1, f"pid {pid} is gone"))
                continue
            cpu = (now.cpu_seconds - before.cpu_seconds) / wall * 100
            results.append(_judge(name, cpu, now.memory_bytes / _MB, now.open_files, perf, f"pid {pid}"))
        return results


def _judge(
    name: str, cpu: float | None, memory_mb: float | None, open_files: int | None, perf: PerformanceSettings, where: str
) -> CheckResult:
    metrics = {
        k: v
        for k, v in (
            ("cpu_percent", cpu),
            ("memory_mb", memory_mb),
            ("open_files", float(open_files) if open_files is not None else None),
        )
        if v is not None
    }
    parts = [where]
    if cpu is not None:
        parts.append(f"CPU {cpu:.1f}%")
    if memory_mb is not None:
        parts.append(f"memory {memory_mb:.0f} MB")
    parts.append(f"{open_files} open files" if open_files is not None else "open files not reported")
    problems = []
    if perf.cpu_percent is not None and cpu is not None and cpu > perf.cpu_percent:
        problems.append(f"CPU over {perf.cpu_percent:g}%")
    if perf.memory_mb is not None and memory_mb is not None and memory_mb > perf.memory_mb:
        problems.append(f"memory over {perf.memory_mb:g} MB")
    if perf.open_files is not None and open_files is not None and open_files > perf.open_files:
        problems.append(f"open files over {perf.open_files}")
    detail = ", ".join(parts) + ("; " + "; ".join(problems) if problems else "")
    return CheckResult(f"resources {name}", "resources", not problems, 0.0, 1, detail, metrics=metrics)


def docker_stats_args(env: Environment, containers: list[str]) -> list[str]:
    """The document's `docker stats`, once, as JSON lines, for the compose project's containers."""
    return ["docker", "stats", "--no-stream", "--format", "{{json .}}", *containers]


def parse_docker_stats(output: str, perf: PerformanceSettings) -> list[CheckResult]:
    return [
        _judge(name, cpu, memory / _MB if memory is not None else None, None, perf, "container")
        for name, cpu, memory in docker_stats_rows(output)
    ]


def compose_results(env: Environment, perf: PerformanceSettings, redact: Redactor) -> list[CheckResult]:
    from ultra_ops.engine.runtimes.compose import ComposeRuntime

    runtime = ComposeRuntime(env, redact=redact)
    try:
        ids = runtime.container_ids()
        # Where the containers are: on the environment's host over ssh, else here.
        output = runtime.docker(docker_stats_args(env, ids)) if ids else ""
    except (UltraOpsError, OSError) as exc:
        return [CheckResult("resources", "resources", False, 0.0, 1, f"docker stats failed: {redact(str(exc))[:150]}")]
    return parse_docker_stats(output, perf)


def disk_results(env: Environment, perf: PerformanceSettings) -> list[CheckResult]:
    """Free space where the environment keeps its data, logs and backups."""
    floor_mb = perf.disk_free_mb if perf.disk_free_mb is not None else float(env.min_free_disk_mb)
    results = []
    for label, folder in (("data", env.root), ("logs", env.log_dir), ("backups", env.backups_path)):
        path = folder
        while not path.exists() and path != path.parent:
            path = path.parent  # a folder not made yet lives on its parent's disk
        usage = shutil.disk_usage(path)
        free_mb, free_pct = usage.free / _MB, usage.free / usage.total * 100
        problems = []
        if free_mb < floor_mb:
            problems.append(f"under {floor_mb:g} MB")
        if free_pct < perf.disk_free_percent:
            problems.append(f"under {perf.disk_free_percent:g}%")
        detail = f"{free_mb:.0f} MB ({free_pct:.1f}%) free at {folder}" + (
            "; " + ", ".join(problems) if problems else ""
        )
        results.append(
            CheckResult(
                f"disk {label}",
                "disk",
                not problems,
                0.0,
                1,
                detail,
                metrics={"free_mb": free_mb, "free_percent": free_pct},
            )
        )
    return results
