"""`ultra-ops status` names the environment's host and whether it answers, quickly either way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ultra_ops_tests.support.cli import run_cli
from ultra_ops_tests.support.hosts import TestHost, host_config

pytestmark = pytest.mark.docker


def test_status_shows_the_host_and_whether_it_answers(host: TestHost, tmp_path: Path) -> None:
    config = host_config(tmp_path, host, connect_timeout_s=2)
    proc = run_cli("status", config=config, environment="staging", timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("host "))
    assert f"deploy@{host.address}:22 answers Docker 20.10" in line
    host.cut()
    started = time.monotonic()
    proc = run_cli("status", config=config, environment="staging", timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("host "))
    assert f"deploy@{host.address}:22 does not answer: no answer within 2 s" in line
    assert elapsed < 15, f"status took {elapsed:.1f} s with its host cut"
    assert not any(line.startswith("service ") for line in proc.stdout.splitlines())
