"""The environment lock: exclusive, names its holder, and never outlives a crashed holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ultra_ops.engine.errors import LockHeldError
from ultra_ops.engine.locks import EnvironmentLock, lock_holder
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.configs import write_config

pytestmark = pytest.mark.unit


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    return load_settings(write_config(tmp_path, "unused_db")).environment("staging")


def test_second_holder_is_refused_with_the_first_ones_run(env: Environment) -> None:
    with EnvironmentLock(env, operation="deploy v1.0.0", run_id="run-one"):
        assert lock_holder(env)["run_id"] == "run-one"
        with pytest.raises(LockHeldError, match="deploy v1.0.0 run run-one"):
            EnvironmentLock(env, operation="rollback", run_id="run-two").acquire()
    assert lock_holder(env) is None
    with EnvironmentLock(env, operation="rollback", run_id="run-two"):
        assert lock_holder(env)["run_id"] == "run-two"


def test_lock_of_a_killed_process_does_not_block(env: Environment, tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from ultra_ops.engine.settings import load_settings\n"
        "from ultra_ops.engine.locks import EnvironmentLock\n"
        f"env = load_settings({str(env.config_file)!r}).environment('staging')\n"
        "EnvironmentLock(env, operation='deploy v1.0.0', run_id='crashing-run').acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError, match="crashing-run"):
            EnvironmentLock(env, operation="deploy v1.0.1").acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while lock_holder(env) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    with EnvironmentLock(env, operation="deploy v1.0.1") as lock:
        assert lock.held
