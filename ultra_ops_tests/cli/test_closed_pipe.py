"""`ultra-ops status | head -1` and its kind: output to a reader that went away ends quietly, exit 141.

The console script runs in its own process with stdout a real pipe, closed by the test as `head`
closes it: after the first line where the output is larger than the pipe's buffer (so the writer
is still writing when it closes), or before anything was written where it is smaller.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ultra_ops.cli import CLOSED_PIPE
from ultra_ops.engine.release.records import ReleaseRecord, ReleaseStatus, record_release
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.cli import start_cli
from ultra_ops_tests.support.configs import write_config

pytestmark = pytest.mark.unit


def _start(tmp_path: Path, config: Path, *argv: str) -> subprocess.Popen:
    # Its own process, as an operator runs it: `python -m ultra_ops.cli` is the console script's run().
    home = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    return start_cli(*argv, config=config, environment="staging", env=home, text=False)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err.decode()


def test_releases_cut_after_the_first_line_ends_quietly(tmp_path: Path) -> None:
    config = write_config(tmp_path, "no_db_needed")
    env = load_settings(config).environment("staging")
    reason = "a reason long enough to fill the pipe " * 12
    for i in range(300):  # about 170 kB of table: more than a pipe holds (64 kB on Linux)
        stamp = f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00"
        record_release(
            env,
            ReleaseRecord(
                environment="staging",
                operation="deploy",
                version=f"v1.0.{i}",
                previous_version=None,
                status=ReleaseStatus.DEPLOYED,
                started_at=stamp,
                ended_at=stamp,
                reason=reason,
            ),
        )
    proc = _start(tmp_path, config, "releases")
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()
    proc.stdout.close()  # as `head -1` does
    code, err = _finish(proc)
    assert first.startswith("STARTED")
    assert err == "" and code == CLOSED_PIPE == 141


@pytest.mark.parametrize("argv", [["status"], ["backups", "list"], ["releases", "--json"]], ids=" ".join)
def test_a_reader_gone_before_the_first_line_ends_quietly(tmp_path: Path, argv: list[str]) -> None:
    config = write_config(tmp_path, "no_db_needed")
    proc = _start(tmp_path, config, *argv)
    assert proc.stdout is not None
    proc.stdout.close()  # as `| head -0`, or a reader that died: the first write meets a closed pipe
    code, err = _finish(proc)
    assert err == "" and code == CLOSED_PIPE


def test_a_reader_that_stays_gets_everything(tmp_path: Path) -> None:
    config = write_config(tmp_path, "no_db_needed")
    proc = _start(tmp_path, config, "status")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b""
    assert out.decode().startswith("environment  staging (process runtime)")
