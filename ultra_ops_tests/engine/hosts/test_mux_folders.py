"""The run's master connection without a host: how commands name it, how a gone master's failures
read, and the private, per-run folder of its socket."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from ultra_ops.engine.hosts import mux
from ultra_ops.engine.hosts.ssh import (
    MASTER_GONE_MARK,
    HostUnreachable,
    SshHost,
    classify,
    share,
    unshare,
)
from ultra_ops_tests.engine.hosts.test_ssh_argv import SETTINGS, options

pytestmark = pytest.mark.unit

WHERE = "staging's host deploy@10.0.0.5:2222"


def test_commands_are_sessions_on_the_runs_master_while_it_is_registered() -> None:
    host = SshHost("staging", SETTINGS)
    assert options(host.argv(["true"]))["ControlPath"] == "none"  # no master: a connection of its own
    master = mux.Master(host)
    master.socket = Path("/tmp/uo-run-x/s")
    share("staging", SETTINGS, master)
    try:
        opts = options(host.argv(["true"]))
        assert (opts["ControlMaster"], opts["ControlPath"]) == ("no", "/tmp/uo-run-x/s")
        # ssh's fallback to a connection of its own fails instead, with a line classify reads.
        assert MASTER_GONE_MARK in opts["ProxyCommand"] and "'" not in opts["ProxyCommand"]
        # Another environment on the same machine, and the lock's session, connect on their own.
        assert options(SshHost("production", SETTINGS).argv(["true"]))["ControlPath"] == "none"
        lock_host = SshHost("staging", SETTINGS, own_connection=True)
        assert options(lock_host.argv(["true"]))["ControlPath"] == "none"
        # A command with a forward of its own: on its own connection, or the forward would stay
        # on the master after it.
        reverse = host.argv(["docker", "pull", "x"], extra=["-R", "127.0.0.1:5000:127.0.0.1:5000"])
        assert options(reverse)["ControlPath"] == "none" and "ProxyCommand" not in options(reverse)
        # Unregistering another master leaves this one.
        unshare("staging", SETTINGS, mux.Master(host))
        assert options(host.argv(["true"]))["ControlPath"] == "/tmp/uo-run-x/s"
    finally:
        unshare("staging", SETTINGS, master)
    assert options(host.argv(["true"]))["ControlPath"] == "none"


@pytest.mark.parametrize(
    "stderr",
    [
        # A stale socket (a master killed): not the host refusing ssh.
        f"Control socket connect(/tmp/uo-x/s): Connection refused\n{MASTER_GONE_MARK}\n"
        "kex_exchange_identification: Connection closed by remote host",
        f"{MASTER_GONE_MARK}\nkex_exchange_identification: Connection closed by remote host",
        "mux_client_request_session: read from master failed: Broken pipe",
        "Control socket connect(/tmp/uo-x/s): No such file or directory",
    ],
)
def test_a_gone_master_is_host_unreachable(stderr: str) -> None:
    error = classify(stderr, 255, WHERE, SETTINGS)
    assert type(error) is HostUnreachable
    assert "shared connection" in str(error) and str(error).startswith(f"{WHERE}: ")


def test_the_socket_folder_is_the_runs_own_private_and_short() -> None:
    first = mux.run_folder("8f3c2a1b-77aa-4e0e-9d7b-0c1d2e3f4a5b")
    second = mux.run_folder("8f3c2a1b-77aa-4e0e-9d7b-0c1d2e3f4a5b")
    try:
        assert first != second, "a run never gets another's folder"
        for folder in (first, second):
            st = os.lstat(folder)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
            assert folder.name.startswith("uo-8f3c2a1b-")
            assert len(str(folder / "s")) + len(".XXXXXXXXXXXXXXXX") < 104  # sun_path, with ssh's temporary name
    finally:
        first.rmdir()
        second.rmdir()


def test_a_runtime_dir_that_is_not_private_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = Path(tempfile.mkdtemp(prefix="uox", dir="/tmp"))  # short: tmp_path is too long for a socket
    try:
        shared.chmod(0o755)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
        assert mux.runtime_base() != shared
        shared.chmod(0o700)
        assert mux.runtime_base() == shared
        monkeypatch.setenv("XDG_RUNTIME_DIR", "/tmp/" + "x" * 90)  # too long for a socket path
        assert mux.runtime_base() != Path(os.environ["XDG_RUNTIME_DIR"])
        odd = Path(tempfile.mkdtemp(prefix="uo%x ", dir="/tmp"))  # ssh would expand or split it
        try:
            monkeypatch.setenv("XDG_RUNTIME_DIR", str(odd))
            assert mux.runtime_base() != odd
        finally:
            odd.rmdir()
    finally:
        shared.rmdir()


def test_a_killed_runs_folder_is_swept_a_live_ones_kept(tmp_path: Path) -> None:
    base = tmp_path / "b"
    base.mkdir(mode=0o700)
    dead, live, other = base / "uo-dead-1", base / "uo-live-1", base / "not-ours"
    for folder in (dead, live, other):
        folder.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(dead / "s"))
    stale.close()  # the file stays, nobody listens: a master killed by SIGKILL
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(live / "s"))
    listening.listen()
    with listening:
        mux.sweep(base)
    assert not dead.exists()
    assert live.exists() and other.exists()
