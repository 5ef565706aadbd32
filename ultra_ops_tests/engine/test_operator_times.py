"""One time zone, the config's, wherever ultra_ops writes a time for an operator (records keep UTC):
a decision made already, a lock's holder, the backups table, a service log's start line."""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ultra_ops.cli import main
from ultra_ops.cli.backups import print_backups
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.locks import describe_holder
from ultra_ops.engine.runtimes.process import ProcessRuntime
from ultra_ops.engine.settings import ProcessSpec, load_settings
from ultra_ops.engine.verify.decisions import ask, decide
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.ports import free_port

pytestmark = pytest.mark.unit

ZONE = "Asia/Kolkata"  # UTC+05:30 all year: a shown time cannot pass for UTC


def _env(tmp_path: Path):  # noqa: ANN202
    config = write_config(tmp_path, "unused")
    config.write_text(config.read_text().replace('timezone = "UTC"', f'timezone = "{ZONE}"', 1))
    return load_settings(config).environment("staging")


def test_every_environment_carries_the_configs_time_zone(tmp_path: Path) -> None:
    assert _env(tmp_path).timezone == ZONE
    (tmp_path / "utc").mkdir()
    assert load_settings(write_config(tmp_path / "utc", "unused")).environment("staging").timezone == "UTC"


def test_a_decision_made_already_says_when_in_the_configs_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _env(tmp_path)
    ask(env, "deploy-1", version="v1.0.0", run_id=None, summary="inconclusive")
    record = decide(env, "approve", by="alice", request_id="deploy-1")
    assert record.decided_at.endswith("+00:00")  # the record stays UTC
    with pytest.raises(InputError) as again:
        decide(env, "rollback", by="bob", request_id="deploy-1")
    message = str(again.value)
    assert "decided already: approve by alice at " in message and message.endswith(" IST")
    assert record.decided_at not in message
    # The CLI refuses it before a run exists, saying the same.
    argv = ["verify", "--environment", "staging", "--config", str(env.config_file), "--decide", "rollback"]
    assert main([*argv, "--by", "bob", "--request", "deploy-1"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"by alice at {local_time(record.decided_at, ZONE)}")


def test_a_lock_holder_and_the_backups_table_in_the_configs_zone(capsys: pytest.CaptureFixture[str]) -> None:
    holder = {"operation": "deploy", "pid": 1, "host": "h", "started_at": "2026-12-04T20:00:00+00:00"}
    assert describe_holder(holder, ZONE) == "deploy pid 1 on h since 2026-12-05 01:30:00 IST"
    assert describe_holder(holder).endswith("since 2026-12-04 20:00:00 UTC")
    row = {"id": "b1", "version": "v1.0.0", "created_at": "2026-12-04T20:00:00.5+00:00", "size_bytes": 1e6}
    print_backups([row], ZONE)
    assert "2026-12-05 01:30:00 IST" in capsys.readouterr().out


def test_a_service_logs_start_line_is_in_the_configs_zone(tmp_path: Path) -> None:
    """The line the process runtime writes before a service's output: the config's zone, named,
    not the machine's local time."""
    env = _env(tmp_path)
    env.env_file.parent.mkdir(parents=True, exist_ok=True)
    env.env_file.write_text("")
    port = free_port()
    env = dataclasses.replace(
        env,
        processes=(
            ProcessSpec(
                name="worker",
                command=(sys.executable, "-c", "pass"),
                port=port,
                health_url=f"http://127.0.0.1:{port}/health",
            ),
        ),
    )
    runtime = ProcessRuntime(env)
    before = datetime.now(UTC)
    try:
        runtime.up("v1.0.0")
    finally:
        runtime.down()
    first = (env.log_dir / "worker.out").read_text().splitlines()[0]
    stamp = first.removeprefix("--- ").split(" starting worker v1.0.0")[0]
    assert stamp.endswith(" IST"), first
    shown = datetime.strptime(stamp.removesuffix(" IST"), "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(ZONE))
    assert abs((shown - before).total_seconds()) < 60
