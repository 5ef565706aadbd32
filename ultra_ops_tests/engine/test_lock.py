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


# A contender: at each line on stdin, takes the lock without waiting and lets it go at once (the
# narrowest hold, so the others often look while it is releasing), then says how it went.
CONTENDER = """
import sys
from ultra_ops.engine.errors import LockHeldError
from ultra_ops.engine.locks import EnvironmentLock
from ultra_ops.engine.settings import load_settings
env = load_settings(sys.argv[1]).environment("staging")
name = sys.argv[2]
print("ready", flush=True)
for round_ in sys.stdin:
    try:
        EnvironmentLock(env, operation="deploy", run_id=f"{name}-{round_.strip()}").acquire().release()
        print("won", flush=True)
    except LockHeldError as exc:
        print(f"lost {exc}", flush=True)
"""
ROUNDS = 150


def test_the_loser_of_a_race_names_the_holder_or_says_it_is_being_released(env: Environment) -> None:
    names = ["a", "b", "c"]
    procs = {
        n: subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(env.config_file), n],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in names
    }
    try:
        assert all(p.stdout.readline() == "ready\n" for p in procs.values())
        unnamed, lost = [], 0
        for r in range(ROUNDS):
            for p in procs.values():
                p.stdin.write(f"{r}\n")
                p.stdin.flush()
            answers = {n: p.stdout.readline().strip() for n, p in procs.items()}
            for n, answer in answers.items():
                assert answer == "won" or answer.startswith("lost "), answer
                if answer == "won":
                    continue
                lost += 1
                others = [f"run {o}-{r} " for o in names if o != n]
                if not any(o in answer for o in others) and "being released" not in answer:
                    unnamed.append(answer)
        assert lost >= ROUNDS // 2  # the rounds did race
        assert unnamed == []
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait(timeout=30)


def test_a_holder_without_a_record_is_named_by_its_pid(env: Environment) -> None:
    # Between taking the lock and writing its record a holder is only in the kernel's flock table.
    path = env.state_dir / "lock"
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    env.state_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError, match=f"pid {proc.pid} on .*not yet written its record"):
            EnvironmentLock(env, operation="deploy").acquire()
        assert lock_holder(env)["pid"] == proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
