"""One SSH connection per environment's host per run: every command a session on the run's master,
the lock on a connection of its own; a cut network fails every session within 10 s as
HostUnreachable, never a quiet new connection; the master and its socket never outlive the run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ultra_ops.engine.hosts import files, mux
from ultra_ops.engine.hosts.lock import HostLock
from ultra_ops.engine.hosts.reach import Reach
from ultra_ops.engine.hosts.ssh import HostError, HostUnreachable, SshHost
from ultra_ops.engine.hosts.tunnel import Tunnel
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.hosts.test_tunnel import refused, serve_on_loopback
from ultra_ops_tests.support.hosts import TestHost, docker, host_config, ssh_clients_to

pytestmark = pytest.mark.docker

RUN = "8f3c2a1b-77aa-4e0e-9d7b-0c1d2e3f4a5b"


def accepted(host: TestHost) -> int:
    """The ssh connections the host's sshd has accepted so far (its log is the container's)."""
    logs = docker("logs", host.container)
    return (logs.stdout + logs.stderr).count("Accepted publickey")


def connections_on_host(host: TestHost) -> list[str]:
    """Established connections to the host's sshd, as the host sees them."""
    return host.exec("ss", "-tnH", "state", "established", "( sport = :22 )").stdout.strip().splitlines()


def sessions_on(host: TestHost) -> str:
    """The command lines running on the host."""
    return host.exec("ps", "-eo", "args").stdout


def environment(tmp_path: Path, host: TestHost) -> Environment:
    return load_settings(host_config(tmp_path, host)).environment("staging")


def test_a_run_is_one_connection_to_its_host_and_the_locks_own(host: TestHost, tmp_path: Path) -> None:
    serve_on_loopback(host, 8000)
    env = environment(tmp_path, host)
    assert env.host is not None
    before = accepted(host)
    reach = Reach(env, run=RUN)
    with reach:
        assert reach.master is not None and reach.master.folder is not None
        folder = reach.master.folder
        st = os.lstat(folder)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
        assert folder.name.startswith("uo-8f3c2a1b-")
        # What a deploy does, each module with an SshHost of its own as in the product.
        ssh = SshHost.for_environment(env)
        for _ in range(3):
            ssh.run(["true"], timeout=10)
        files.make_dirs(ssh, env.host.root)
        files.write_atomic(ssh, env.host.root / "probe", "x\n")
        assert files.read(ssh, env.host.root / "probe") == "x\n"
        get_runtime(env).status()
        with Tunnel(ssh, 8000) as tunnel:
            assert httpx.get(f"http://127.0.0.1:{tunnel.local_port}/", timeout=5).status_code == 200
        assert refused(tunnel.local_port or 0), "a forward on the master is closed with its tunnel"
        lock = HostLock(env)
        taken, _ = lock.try_acquire({"operation": "deploy", "run_id": RUN})
        assert taken
        clients = ssh_clients_to(host.address)
        assert len(clients) == 2, clients  # the master, and the lock's session on its own connection
        lock.release()
    assert accepted(host) - before == 2, "one connection for the run's commands, one for the lock"
    assert not folder.exists(), "the socket's folder goes with the run"
    assert not ssh_clients_to(host.address)
    # A later run: a folder of its own, never the first one's.
    later = Reach(env, run=RUN)
    with later:
        assert later.master is not None and later.master.folder not in (None, folder)


def test_a_cut_fails_every_session_within_10_s_and_nothing_reconnects(host: TestHost, tmp_path: Path) -> None:
    serve_on_loopback(host, 8000)
    env = environment(tmp_path, host)
    reach = Reach(env)
    ssh = SshHost.for_environment(env)
    failures: dict[str, BaseException | None] = {}
    ended_at: dict[str, float] = {}

    def session(name: str, command: list[str]) -> None:
        try:
            ssh.run(command, timeout=60)
            failures[name] = None
        except BaseException as exc:  # noqa: BLE001 - what each session ended with is the test's
            failures[name] = exc
        ended_at[name] = time.monotonic()

    cut = False
    try:
        with reach:
            tunnel = Tunnel(ssh, 8000).open()
            commands = {"sleep": ["sleep", "60"], "stream": ["sh", "-c", "while :; do echo .; sleep 0.2; done"]}
            sessions = [threading.Thread(target=session, args=item) for item in commands.items()]
            for t in sessions:
                t.start()
            deadline = time.monotonic() + 10
            while "sleep 60" not in host.exec("ps", "-eo", "args").stdout:
                assert time.monotonic() < deadline, "the sessions did not start"
                time.sleep(0.05)
            host.cut()
            cut, cut_at = True, time.monotonic()
            for t in sessions:
                t.join(timeout=15)
            for name in ("sleep", "stream"):
                assert isinstance(failures[name], HostUnreachable), (name, failures[name])
                assert "shared connection" in str(failures[name])
                assert ended_at[name] - cut_at < 10, f"{name} noticed the cut after {ended_at[name] - cut_at:.1f} s"
            assert not tunnel.alive()
            # A command after that fails at once: no connection of its own (it would wait out the
            # connect timeout, then run outside the run's scope once the host is back).
            started = time.monotonic()
            with pytest.raises(HostUnreachable, match="shared connection"):
                ssh.run(["true"], timeout=30)
            assert time.monotonic() - started < 2
            with pytest.raises(HostUnreachable):
                reach.check()
            tunnel.close()
    finally:
        if cut:
            host.restore()
    assert not ssh_clients_to(host.address)


_HOLDER = """
import sys, threading
from ultra_ops.engine.hosts.reach import Reach
from ultra_ops.engine.hosts.ssh import SshHost
from ultra_ops.engine.settings import load_settings
env = load_settings(sys.argv[1]).environment("staging")
reach = Reach(env, run="killedrun")
reach.open()
threading.Thread(target=lambda: SshHost.for_environment(env).run(["sleep", "600"], timeout=700), daemon=True).start()
print(reach.master.folder, flush=True)
threading.Event().wait()
"""


def test_a_killed_run_leaves_no_master_and_no_connection(host: TestHost, tmp_path: Path) -> None:
    config = host_config(tmp_path, host)
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(config)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert child.stdout is not None
        folder = Path(child.stdout.readline().strip())
        assert folder.name.startswith("uo-killedru-")
        deadline = time.monotonic() + 10
        while "sleep 600" not in sessions_on(host):
            assert time.monotonic() < deadline, "the session did not start"
            time.sleep(0.05)
        assert len(connections_on_host(host)) == 1
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 5
    # (The remote `sleep` itself runs on, as after any lost ssh connection without a terminal: it
    # neither reads nor writes. What the host must see is the connection's end.)
    while ssh_clients_to(host.address) or connections_on_host(host):
        assert time.monotonic() < deadline, (
            f"the master (or a session on it) outlived its run: {ssh_clients_to(host.address)} "
            f"{connections_on_host(host)}"
        )
        time.sleep(0.05)
    # Its folder is left (SIGKILL runs no clean-up), its socket dead: the next master made on this
    # machine sweeps it (another test's, in a parallel run, may have done so already).
    mux.run_folder("next").rmdir()
    assert not folder.exists()


def test_the_master_is_refused_as_a_direct_connection_would_be(host: TestHost, tmp_path: Path) -> None:
    env = environment(tmp_path, host)
    host.fleet.known_hosts.write_text("")  # the host's key unknown: refused, never learnt
    with pytest.raises(HostError, match="not in") as caught, Reach(env):
        pass
    assert type(caught.value).__name__ == "HostKeyUnknown"
    assert not ssh_clients_to(host.address)
