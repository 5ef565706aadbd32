"""The lock of an environment on a host, held across machines: this machine (the platform) and a
deployer (an operator's laptop, a container with an address of its own running this same
ultra_ops) take the one lock on the environment's host; exactly one holds it, the other is refused
naming who holds it, and a holder that dies or loses its network frees it in a bounded time and
learns that it lost it before anyone else can take it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops.defs.shared.resources import EnvironmentLocks
from ultra_ops.engine.errors import LockHeldError
from ultra_ops.engine.hosts.lock import HOST_RELEASE_S, LockLost
from ultra_ops.engine.locks import EnvironmentLock, lock_holder
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.cli import run_cli
from ultra_ops_tests.support.deployer import SOURCE, Deployer, start_deployer
from ultra_ops_tests.support.hosts import HostFleet, TestHost, host_config
from ultra_ops_tests.support.lock_client import Contender

pytestmark = pytest.mark.docker

ROUNDS = 5
# kill -9 of the holder: the ssh client's end of file reaches the host at once; the rest is the
# next try's ssh connection.
KILLED_FREE_S = 3.0
# A cut network: the host's countdown (HOST_RELEASE_S from the last heartbeat, sent at most one
# heartbeat interval before the cut) plus the next try's connection and a poll.
CUT_FREE_S = HOST_RELEASE_S + 4.0
HERE = socket.gethostname()


@pytest.fixture
def deployer(fleet: HostFleet, host: TestHost, tmp_path: Path) -> Deployer:
    return start_deployer(fleet, tmp_path)


@pytest.fixture
def env(host: TestHost, tmp_path: Path) -> Environment:
    return load_settings(host_config(tmp_path / "here", host)).environment("staging")


@pytest.fixture
def contenders(host: TestHost, deployer: Deployer, tmp_path: Path) -> Iterator[tuple[Contender, Contender]]:
    """The same lock client on this machine and on the deployer, each with a config of its own."""
    here_config = host_config(tmp_path / "here", host)
    there_config = host_config(tmp_path / "there", host)
    module = ["-m", "ultra_ops_tests.support.lock_client"]
    started: list[Contender] = []
    try:
        here = subprocess.Popen(
            [sys.executable, *module, str(here_config), "staging"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SOURCE)},
        )
        started.append(Contender(here, HERE))
        started.append(Contender(deployer.popen("python3", *module, str(there_config), "staging"), deployer.machine))
        yield started[0], started[1]
    finally:
        for contender in started:
            contender.stop()


def test_five_races_between_two_machines_have_one_winner_each(contenders: tuple[Contender, Contender]) -> None:
    here, there = contenders
    winners = []
    for round_ in range(ROUNDS):
        # One start time for both (the machines share this machine's clock): a race, not a queue.
        start = time.time() + 1.0
        here.send(f"take here-{round_} 0 {start}")
        there.send(f"take there-{round_} 0 {start}")
        answers = {here.machine: here.answer(), there.machine: there.answer()}
        won = [machine for machine, answer in answers.items() if answer.startswith("won ")]
        assert len(won) == 1, f"round {round_}: {answers}"
        winner = here if won[0] == here.machine else there
        loser = there if winner is here else here
        refusal = answers[loser.machine]
        run = f"{'here' if winner is here else 'there'}-{round_}"
        assert refusal.startswith("refused environment staging is locked by deploy"), refusal
        # Who, which machine, which run, since when.
        assert f"run {run} by " in refusal and f" on {winner.machine})" in refusal and " since " in refusal, refusal
        winner.send("release")
        assert winner.answer().startswith("released ")
        winners.append(winner.machine)
    assert len(winners) == ROUNDS


def test_a_killed_holder_frees_the_lock_within_seconds(
    contenders: tuple[Contender, Contender], deployer: Deployer, env: Environment
) -> None:
    _, there = contenders
    there.send(f"take there-killed 0 {time.time()}")
    assert there.answer().startswith("won there-killed")
    with pytest.raises(LockHeldError, match=f"run there-killed by root \\(pid {there.pid} on {deployer.machine}\\)"):
        EnvironmentLock(env, operation="deploy", run_id="here").acquire()

    deployer.kill(there.pid)
    killed = time.monotonic()
    lock = EnvironmentLock(env, operation="deploy", run_id="here").acquire(wait_s=KILLED_FREE_S + 5)
    freed_after = time.monotonic() - killed
    try:
        assert freed_after < KILLED_FREE_S, f"the lock of a killed holder was freed after {freed_after:.1f} s"
        assert lock_holder(env)["run_id"] == "here"
    finally:
        lock.release()


def test_a_holder_cut_off_the_network_loses_the_lock_before_another_takes_it(
    contenders: tuple[Contender, Contender], deployer: Deployer, env: Environment
) -> None:
    _, there = contenders
    there.send(f"take there-cut 0 {time.time()}")
    assert there.answer().startswith("won there-cut")
    there.send("watch")

    deployer.cut()
    cut = time.time()
    lock = EnvironmentLock(env, operation="deploy", run_id="here").acquire(wait_s=CUT_FREE_S + 10)
    taken = time.time()
    try:
        assert taken - cut < CUT_FREE_S, f"the lock of a holder cut off was freed after {taken - cut:.1f} s"
        assert taken - cut > 3, "taken while the holder may still have counted on it"
        lost = there.answer(timeout=30)
        assert lost.startswith("lost "), lost
        lost_at = float(lost.split()[1])
        # The holder knew before this machine could act (the two share this machine's clock).
        assert lost_at < taken, f"the holder learnt it lost the lock {lost_at - taken:.1f} s after it was taken"
        assert lost_at - cut < HOST_RELEASE_S, lost
        stopped = there.answer(timeout=10)
        assert stopped.startswith("stopped environment staging lost its lock on staging's host"), stopped
        assert "stopped before the next change" in stopped
    finally:
        lock.release()


def _environment_on_host(host: TestHost) -> str:
    """Every file of the environment's folder on the host with its checksum: what a change changes."""
    script = "cd /srv/ultra-ops && find . -type f -exec sha256sum {} + | sort"
    proc = host.exec("sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_cli_on_either_machine_is_refused_naming_the_holder_and_changes_nothing(
    contenders: tuple[Contender, Contender], deployer: Deployer, host: TestHost, env: Environment, tmp_path: Path
) -> None:
    """`ultra-ops stop` (a job that changes the environment under its lock) on this machine while
    the deployer holds the lock, then on the deployer while this machine holds it."""
    _, there = contenders
    there.send(f"take there-cli 0 {time.time()}")
    assert there.answer().startswith("won there-cli")
    before = _environment_on_host(host)  # the holder's record among them
    local_before = sorted(env.state_dir.rglob("*")) if env.state_dir.exists() else []

    here_env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster-here")}
    status = run_cli("status", config=env.config_file, environment="staging", env=here_env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"run there-cli by root (pid {there.pid} on {deployer.machine}) since " in status.stdout, status.stdout

    here = run_cli("stop", config=env.config_file, environment="staging", env=here_env, timeout=120)
    assert here.returncode == 1, here.stdout + here.stderr
    assert "environment staging is locked by deploy run there-cli by root" in here.stderr, here.stderr
    assert f"on {deployer.machine})" in here.stderr
    assert _environment_on_host(host) == before, "a refused operation changed the environment's host"
    assert (sorted(env.state_dir.rglob("*")) if env.state_dir.exists() else []) == local_before
    there.send("release")
    assert there.answer().startswith("released ")

    with EnvironmentLock(env, operation="deploy v1.2.3", run_id="run-here"):
        before = _environment_on_host(host)
        there_config = tmp_path / "there" / "ultra_ops.toml"
        stop = ["-m", "ultra_ops.cli", "stop", "--environment", "staging", "--config", str(there_config)]
        remote = deployer.run("python3", *stop, env={"DAGSTER_HOME": "/tmp/dagster-there"})
        assert remote.returncode == 1, remote.stdout + remote.stderr
        assert f"locked by deploy v1.2.3 run run-here by root (pid {os.getpid()} on {HERE}) since " in remote.stderr
        assert _environment_on_host(host) == before, "a refused operation changed the environment's host"


def test_a_run_that_lost_its_lock_stops_before_its_next_change(
    host: TestHost, env: Environment, tmp_path: Path
) -> None:
    """The run's side: the network to the host cut while a run holds the lock (EnvironmentLocks,
    which every step that changes an environment goes through), its next change on the host and its
    next step fail before they start."""
    dagster_env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    locks = EnvironmentLocks()
    lock = locks.hold(env, operation="deploy v1.2.3", run_id="run-cut")
    assert lock_holder(env)["run_id"] == "run-cut"
    host.cut()
    try:
        cut = time.monotonic()
        while lock.lost is None and time.monotonic() - cut < HOST_RELEASE_S:
            time.sleep(0.05)
        assert lock.lost is not None, "the run did not notice that its lock was lost"
        lost = "staging lost its lock on staging's host .* stopped before the next change"
        started = time.monotonic()
        with pytest.raises(LockLost, match=lost):  # within the step: the next change on the host
            get_runtime(env).up("v1.2.3")
        assert time.monotonic() - started < 1, "refused before trying the host, not after its timeout"
        with pytest.raises(LockLost, match=lost):  # and the next step
            locks.hold(env, operation="deploy v1.2.3", run_id="run-cut")
        # A host that does not answer cannot say who holds its lock: status says so.
        status = run_cli("status", config=env.config_file, environment="staging", env=dagster_env, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "lock         unknown (the host does not answer)" in status.stdout, status.stdout
    finally:
        host.restore()
        lock.release()
    # The host let go of it by itself: the next operation takes it.
    with EnvironmentLock(env, operation="rollback", run_id="run-next").acquire(wait_s=HOST_RELEASE_S + 5):
        assert lock_holder(env)["run_id"] == "run-next"
