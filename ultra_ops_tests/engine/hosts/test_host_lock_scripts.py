"""The scripts that hold an environment's lock on its host, run on this machine (they need only
sh, flock, coreutils and /proc, as the host does): taken by one, refused to the next with the
holder's record, released at end of input and when heartbeats stop; never naming a dead holder's
record for the live one. And the parts of the holder's side that are pure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops.engine.hosts import lock as host_lock
from ultra_ops.engine.locks import describe_holder

pytestmark = pytest.mark.unit

RECORD = {"operation": "deploy", "run_id": "run-1", "user": "alice", "host": "laptop", "pid": 42}


def take(folder: Path, record: dict = RECORD, release_s: int = 10) -> subprocess.Popen[bytes]:
    """A holder session as ssh runs it on the host, here without ssh: its stdin and stdout are ours."""
    argv = ["sh", "-c", host_lock._TAKE, "lock", str(folder), str(release_s), json.dumps(record), host_lock._HOLD]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def look(folder: Path) -> dict | None:
    out = subprocess.run(["sh", "-c", host_lock._LOOK, "look", str(folder)], capture_output=True, timeout=30)
    return host_lock.parse_answer(out.stdout.decode())


def refusal(folder: Path) -> tuple[int, dict | None]:
    proc = take(folder, {**RECORD, "run_id": "run-2"})
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, host_lock.parse_answer(out.decode())


@pytest.fixture
def sessions() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_one_holder_the_next_is_refused_with_its_record_and_end_of_input_frees_it(
    tmp_path: Path, sessions: list
) -> None:
    folder = tmp_path / "state"
    holder = take(folder)
    sessions.append(holder)
    assert holder.stdout.readline() == b"locked\n"
    holder.stdin.write(b".")
    holder.stdin.flush()
    assert holder.stdout.readline() == b".\n", "each heartbeat is echoed"

    code, named = refusal(folder)
    assert code == host_lock._REFUSED
    assert named == RECORD
    assert look(folder) == RECORD
    assert (folder / "holder").stat().st_mode & 0o777 == 0o600

    holder.stdin.close()  # what the host sees when the holder releases, or dies
    assert holder.wait(timeout=5) == 0
    assert look(folder) is None
    assert not (folder / "holder").exists()


def test_without_heartbeats_the_host_lets_go(tmp_path: Path, sessions: list) -> None:
    folder = tmp_path / "state"
    holder = take(folder, release_s=1)  # its stdin stays open and silent, as over a cut network
    sessions.append(holder)
    assert holder.stdout.readline() == b"locked\n"
    started = time.monotonic()
    holder.wait(timeout=10)
    assert time.monotonic() - started < 3
    nxt = take(folder)
    sessions.append(nxt)
    assert nxt.stdout.readline() == b"locked\n"


def test_a_killed_holders_record_is_never_taken_for_the_live_holders(tmp_path: Path, sessions: list) -> None:
    folder = tmp_path / "state"
    dead = take(folder)
    sessions.append(dead)
    assert dead.stdout.readline() == b"locked\n"
    os.killpg(dead.pid, signal.SIGKILL)  # the whole session on the host, record left behind
    dead.wait(timeout=5)
    deadline = time.monotonic() + 5  # the kernel ends the session's processes one by one
    while look(folder) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / "holder").exists()
    assert look(folder) is None, "a record without its flock is not a holder"

    # Held by a process that wrote no record (yet): named as such, never by the dead one's record.
    other = subprocess.Popen(["flock", "-n", str(folder / "lock"), "sleep", "30"], start_new_session=True)
    sessions.append(other)
    with pytest.raises(subprocess.TimeoutExpired):
        other.wait(timeout=0.5)  # it holds the lock (`flock -n` would have exited at once)
    deadline = time.monotonic() + 5
    while look(folder) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert look(folder) == {"unrecorded": True}
    code, named = refusal(folder)
    assert code == host_lock._REFUSED and named == {"unrecorded": True}


@pytest.mark.parametrize(
    ("line", "holder"),
    [
        ("free\n", None),
        ('holder {"lock_pid": 7, "run_id": "r"}\n', {"run_id": "r"}),
        ("unrecorded\n", {"unrecorded": True}),
        ("holder {not json\n", {"unrecorded": True}),
        ("", {"unrecorded": True}),
    ],
)
def test_answers_of_the_host(line: str, holder: dict | None) -> None:
    assert host_lock.parse_answer(line) == holder


def test_the_holder_stops_counting_on_the_lock_before_the_host_may_drop_it() -> None:
    sent = (100.0, 1_800_000_000.0)  # (monotonic, wall clock)
    lease = host_lock.HOST_RELEASE_S - host_lock.SAFETY_S
    assert not host_lock.lease_over(sent, (100.0 + lease, sent[1] + lease))
    assert host_lock.lease_over(sent, (100.0 + lease + 0.1, sent[1] + lease + 0.1))
    # A laptop that slept an hour holding the lock: its monotonic clock stood still, the host's did not.
    assert host_lock.lease_over(sent, (101.0, sent[1] + 3600))
    # A wall clock set back does not stretch the lease either.
    assert host_lock.lease_over(sent, (100.0 + lease + 1, sent[1] - 60))
    assert host_lock.SAFETY_S > 0 and host_lock.HEARTBEAT_S < host_lock.HOST_RELEASE_S - host_lock.SAFETY_S
    # ssh's keepalives end a dead session (about 6 s) before the host drops the lock.
    from ultra_ops.engine.hosts.ssh import SERVER_ALIVE_COUNT_MAX, SERVER_ALIVE_INTERVAL_S

    assert SERVER_ALIVE_INTERVAL_S * (SERVER_ALIVE_COUNT_MAX + 1) < host_lock.HOST_RELEASE_S


def test_a_holder_is_named_by_who_which_machine_which_run_and_since_when() -> None:
    holder = {**RECORD, "started_at": "2026-12-04T20:00:00+00:00"}
    assert describe_holder(holder) == "deploy run run-1 by alice (pid 42 on laptop) since 2026-12-04 20:00:00 UTC"
    assert describe_holder({"unrecorded": True}).endswith(
        "(which has just taken the lock and not yet written its record)"
    )
