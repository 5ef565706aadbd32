"""`ultra-ops` in a process of its own, as an operator runs it: for what only a separate process
shows (a kill or an interrupt mid-run, two commands at once, a run recorded on another instance)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ultra_ops_tests.support.services import REPO


def _command(argv: tuple[str, ...], config: Path, environment: str | None) -> list[str]:
    where = ["--environment", environment] if environment else []
    return [sys.executable, "-m", "ultra_ops.cli", *argv, *where, "--config", str(config)]


def start_cli(
    *argv: str,
    config: Path,
    environment: str | None = None,
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """Start `ultra-ops ARGV [--environment ENVIRONMENT] --config CONFIG` from the repository, its
    output piped as text unless `popen` says otherwise; `env` replaces the inherited environment."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen(_command(argv, config, environment), cwd=REPO, env=env, **options)


def run_cli(
    *argv: str,
    config: Path,
    environment: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """`ultra-ops ...` as start_cli starts it, run to its end: its exit code and captured output."""
    return subprocess.run(
        _command(argv, config, environment), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def wait_for_pause(proc: subprocess.Popen, reached: Path, what: str, timeout: float = 180) -> None:
    """Wait until the process started with ULTRA_OPS_TEST_PAUSE_AT=<point>=`reached` writes that
    file, pausing at its point (crash_points.py); fail with its output if it ends first."""
    deadline = time.monotonic() + timeout
    while not reached.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"the process never reached {what}"
        time.sleep(0.02)
