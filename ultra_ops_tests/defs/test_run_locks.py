"""The environment lock holds for any run: a re-execution from a failed step, a backup started
during a deploy, and a status call in the middle of one."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.errors import LockHeldError
from ultra_ops.engine.locks import EnvironmentLock, lock_holder
from ultra_ops.engine.release.records import find_releases
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.cli import start_cli
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.stack import Stack

# Started instead of the sample service: fails or starts slowly for the versions the test marks.
LAUNCHER = """
import os, runpy, sys, time
from pathlib import Path

marks = Path(__file__).parent
version = os.environ.get("ULTRA_VERSION", "")
if (marks / f"fail-{version}").exists():
    sys.exit(3)
slow = marks / f"slow-{version}"
if slow.exists():
    time.sleep(float(slow.read_text()))
runpy.run_module("ultra_ops.sample_service", run_name="__main__")
"""


def _with_launcher(stack: Stack) -> Path:
    marks = stack.tmp / "marks"
    marks.mkdir()
    launcher = marks / "launcher.py"
    launcher.write_text(LAUNCHER)
    text = stack.config.read_text()
    old = f'command = ["{sys.executable}", "-m", "ultra_ops.sample_service"]'
    assert old in text
    stack.config.write_text(text.replace(old, f'command = ["{sys.executable}", "{launcher}"]'))
    return marks


def _wait_for_holder(stack: Stack, run_id: str | None = None, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lock_holder(stack.env)
        if holder and holder.get("run_id") and (run_id is None or holder["run_id"] == run_id):
            return holder
        time.sleep(0.02)
    raise AssertionError(f"no run held the lock of {stack.env.name} within {timeout} s")


def _steps(instance: DagsterInstance, run_id: str, kind: DagsterEventType) -> list[str]:
    return [
        e.dagster_event.step_key
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type == kind
    ]


def test_reexecution_from_a_failed_step_holds_the_lock(stack: Stack, dagster_home: Path, capsys) -> None:
    from ultra_ops_tests.support.webserver import Webserver

    marks = _with_launcher(stack)
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    (marks / "fail-v1.1.0").touch()
    (stack.migrations / "0002_v110.sql").write_text("CREATE TABLE only_in_v110 (id int);\n")
    assert stack.ops("deploy", "--tag", "v1.1.0") == 1  # v1.1.0 does not start: rolled back to v1.0.0
    assert stack.get("/health").json()["version"] == "v1.0.0"
    assert "only_in_v110" not in stack.tables()  # the restore took its migration back
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        failed = next(r for r in instance.get_runs() if r.tags.get("ultra_ops/version") == "v1.1.0")
        assert _steps(instance, failed.run_id, DagsterEventType.STEP_FAILURE) == ["deploy_up"]

    # The operator fixes the cause and re-executes from the failed step, as the UI's button does.
    (marks / "fail-v1.1.0").unlink()
    (marks / "slow-v1.1.0").write_text("3")
    capsys.readouterr()
    with Webserver(dagster_home, env={"ULTRA_OPS_CONFIG": str(stack.config)}) as web:
        rerun = web.reexecute(failed.run_id, "FROM_FAILURE")
        holder = _wait_for_holder(stack, rerun)
        assert holder["operation"] == "deploy v1.1.0"
        assert stack.ops("deploy", "--tag", "v1.2.0", "--skip-tests") == 1
        assert stack.ops("status") == 0  # looks without taking the lock
        out, err = capsys.readouterr()
        assert rerun in err and "locked" in err
        assert f"run {rerun}" in out
        assert web.wait(rerun) == "SUCCESS"
    assert stack.get("/health").json()["version"] == "v1.1.0"
    assert "only_in_v110" in stack.tables()  # the re-executed step applied it again
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert _steps(instance, rerun, DagsterEventType.STEP_START) == [
            "deploy_up",
            "deploy_verify",
            "deploy_tag",
            "deploy_record",
        ]
        (refused,) = [r for r in instance.get_runs() if r.tags.get("ultra_ops/version") == "v1.2.0"]
        assert refused.status.value == "FAILURE"  # refused at its first step, before it changed anything
        assert _steps(instance, refused.run_id, DagsterEventType.STEP_FAILURE) == ["deploy_plan"]
    assert lock_holder(stack.env) is None


def test_backup_during_a_deploy_waits_or_is_refused(
    tmp_path: Path, pg_database: str, dagster_home: Path, capsys
) -> None:
    stack = Stack(
        tmp_path, pg_database, extra=f'test_command = ["{sys.executable}", "-c", "import time; time.sleep(3)"]'
    )
    deploy = start_cli("deploy", "--tag", "v1.0.0", environment="staging", config=stack.config)
    try:
        holder = _wait_for_holder(stack)
        assert stack.ops("status") == 0
        assert f"run {holder['run_id']}" in capsys.readouterr().out
        assert stack.ops("backups", "create") == 1
        err = capsys.readouterr().err
        assert holder["run_id"] in err and "deploy v1.0.0" in err
        assert list_backups(stack.env) == []  # the deploy has not reached its own backup yet, and none was taken
        assert stack.ops("backups", "create", "--lock-wait", "120") == 0
        assert "waiting up to 120 s" in capsys.readouterr().err
        assert deploy.wait(timeout=120) == 0, deploy.stderr.read()
    finally:
        if deploy.poll() is None:
            deploy.kill()
        stack.stop()
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        # The lock is released when the run's resources close, after its last step and just before
        # Dagster records the run's end: the last step's end is when the environment was free again.
        last_step_end = max(
            e.timestamp
            for e in instance.all_logs(holder["run_id"])
            if e.dagster_event and e.dagster_event_type == DagsterEventType.STEP_SUCCESS
        )
    manual = [b for b in list_backups(stack.env) if b.label == "manual"]
    assert len(manual) == 1
    # Never alongside: the manual backup began after the deploy's last step had ended.
    assert datetime.fromisoformat(manual[0].created_at).timestamp() >= last_step_end


@pytest.mark.unit
def test_a_wait_for_the_lock_ends_when_it_is_released_or_times_out(tmp_path: Path) -> None:
    env = load_settings(write_config(tmp_path, "unused_db")).environment("staging")
    code = (
        "import sys\n"
        "from ultra_ops.engine.settings import load_settings\n"
        "from ultra_ops.engine.locks import EnvironmentLock\n"
        f"env = load_settings({str(env.config_file)!r}).environment('staging')\n"
        "lock = EnvironmentLock(env, operation='deploy v1.0.0', run_id='holding-run').acquire()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "lock.release()\n"
        "print('released', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError, match="holding-run.*after waiting 0.3 s"):
            EnvironmentLock(env, operation="backup").acquire(wait_s=0.3)
        got: list[EnvironmentLock] = []
        waiter = threading.Thread(
            target=lambda: got.append(EnvironmentLock(env, operation="backup", run_id="waiting-run").acquire(wait_s=60))
        )
        waiter.start()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        waiter.join(timeout=60)
        assert got and got[0].held
        assert lock_holder(env)["run_id"] == "waiting-run"
        got[0].release()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_deploy_puts_the_environment_back(stack: Stack, signo: int) -> None:
    """Ctrl-C (or SIGTERM) while v1.1.0 starts, after its migration committed: the deploy rolls back
    to its backup before it stops, as on any other failure."""
    marks = _with_launcher(stack)
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    before = (stack.tables(), stack.env.env_file.read_bytes())
    (stack.migrations / "0002_v110.sql").write_text("CREATE TABLE only_in_v110 (id int);\n")
    (marks / "slow-v1.1.0").write_text("30")
    deploy = start_cli("deploy", "--tag", "v1.1.0", environment="staging", config=stack.config)
    try:
        deadline = time.monotonic() + 60
        while b"ULTRA_VERSION=v1.1.0" not in stack.env.env_file.read_bytes():  # deploy_up has begun
            assert deploy.poll() is None and time.monotonic() < deadline, deploy.stderr.read()
            time.sleep(0.02)
        assert "only_in_v110" in stack.tables()
        deploy.send_signal(signo)
        _, err = deploy.communicate(timeout=120)
    finally:
        if deploy.poll() is None:
            deploy.kill()
    assert deploy.returncode != 0
    assert "interrupted; rolled back to backup" in err
    assert (stack.tables(), stack.env.env_file.read_bytes()) == before
    assert stack.get("/health").json()["version"] == "v1.0.0"
    record = find_releases(stack.env)[0]
    assert (record.version, record.status) == ("v1.1.0", "rolled_back") and "interrupted" in record.reason
    assert lock_holder(stack.env) is None
