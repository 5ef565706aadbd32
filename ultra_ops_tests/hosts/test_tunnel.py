"""SSH tunnels ultra_ops opens itself: to a port the host keeps on its own loopback, closed after,
ended by a cut network, never outliving the process that opened it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ultra_ops.engine.hosts.ssh import HostAuthenticationFailed
from ultra_ops.engine.hosts.tunnel import Tunnel
from ultra_ops_tests.support.hosts import TestHost, docker, make_key

pytestmark = pytest.mark.docker


def serve_on_loopback(host: TestHost, port: int = 8000) -> None:
    """An HTTP server on the host's 127.0.0.1 only: not reachable from outside it."""
    docker("exec", "-d", host.container, "python3", "-m", "http.server", "--bind", "127.0.0.1", str(port), check=True)
    deadline = time.monotonic() + 30
    while f"127.0.0.1:{port}" not in host.exec("ss", "-ltn").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # the listener going away as we connected: not yet refused
    return False


def test_a_tunnel_reaches_what_the_host_does_not_publish(host: TestHost) -> None:
    serve_on_loopback(host)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{host.address}:8000/", timeout=5)
    started = time.monotonic()
    with Tunnel(host.remote(), 8000) as tunnel:
        assert time.monotonic() - started < 3
        port = tunnel.local_port
        assert port is not None
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    assert not tunnel.alive()
    assert refused(port), "closed: the port is free again"


def test_a_tunnel_with_the_wrong_key(host: TestHost, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other")
    with pytest.raises(HostAuthenticationFailed):
        Tunnel(host.remote(identity=other), 8000).open()


def test_a_cut_network_ends_the_tunnel(host: TestHost) -> None:
    serve_on_loopback(host)
    tunnel = Tunnel(host.remote(), 8000).open()
    try:
        host.cut()
        cut_at = time.monotonic()
        while tunnel.alive():
            assert time.monotonic() - cut_at < 10, "a tunnel to a cut host must end within 10 s"
            time.sleep(0.1)
    finally:
        tunnel.close()
        host.restore()


def test_a_tunnel_dies_with_the_process_that_opened_it(host: TestHost) -> None:
    serve_on_loopback(host)
    script = (
        "import sys, time\n"
        "from ultra_ops.engine.hosts.ssh import SshHost\n"
        "from ultra_ops.engine.hosts.tunnel import Tunnel\n"
        "from ultra_ops.engine.settings.host import HostSettings\n"
        "from pathlib import Path\n"
        "s = HostSettings(address=sys.argv[1], user='root', identity_file=Path(sys.argv[2]),"
        " known_hosts=Path(sys.argv[3]))\n"
        "t = Tunnel(SshHost('staging', s), 8000).open()\n"
        "print(t.local_port, flush=True)\n"
        "time.sleep(600)\n"
    )
    argv = [sys.executable, "-c", script, host.address, str(host.identity), str(host.known_hosts)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 5
    while not refused(port):
        assert time.monotonic() < deadline, "the tunnel outlived the process that opened it"
        time.sleep(0.05)
