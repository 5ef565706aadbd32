"""A hosted environment reached as configured: its loopback addresses through tunnels ultra_ops
opens and closes, its other addresses directly; a cut network a HostUnreachable, not a hang."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ultra_ops.engine.hosts.reach import Reach
from ultra_ops.engine.hosts.ssh import HostUnreachable
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.hosts.test_tunnel import serve_on_loopback
from ultra_ops_tests.support.configs import hosted_config
from ultra_ops_tests.support.hosts import TestHost, host_table, ssh_clients_to

pytestmark = pytest.mark.docker

SECRET = "Pa55-word-never-on-an-ssh-line"


def config(tmp_path: Path, host: TestHost) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / ".env.staging").write_text(f"POSTGRES_PASSWORD={SECRET}\n")
    return hosted_config(
        tmp_path,
        host_table(host),
        database=("127.0.0.1", 5432),
        redis_url=f"redis://{host.address}:6379/0",
        sections='[environments.staging.verify]\nhealth_urls = ["http://localhost:8000/"]\n',
        password_key="POSTGRES_PASSWORD",
    )


def test_loopback_through_tunnels_others_directly_and_a_cut_is_host_unreachable(host: TestHost, tmp_path: Path) -> None:
    serve_on_loopback(host, 8000)
    env = load_settings(config(tmp_path, host)).environment("staging")
    reach = Reach(env)
    cut = False
    try:
        with pytest.raises(HostUnreachable) as caught, reach as reached:
            # The host's loopback HTTP server, which it publishes nowhere, answers through the tunnel.
            [url] = reached.verify.health_urls
            assert url.startswith("http://127.0.0.1:") and url != "http://127.0.0.1:8000/"
            assert httpx.get(url, timeout=10).status_code == 200
            assert reached.database.host == "127.0.0.1" and reached.database.port != 5432
            assert reached.redis is not None and reached.redis.url == f"redis://{host.address}:6379/0"  # directly
            clients = ssh_clients_to(host.address)
            # One connection: the run's master, the database's port and the backend's forwarded on
            # it (Redis needs none).
            assert len(clients) == 1 and " -N " in clients[0], clients
            assert len(reach.tunnels) == 2
            assert not any(SECRET in c for c in clients), "no password goes near ssh"
            assert reached.database.password() == SECRET  # the client gets it, and uses it through the tunnel

            host.cut()
            cut = True
            cut_at = time.monotonic()
            while not reach.dead():
                assert time.monotonic() - cut_at < 10, "a tunnel to a cut host must end within 10 s"
                time.sleep(0.1)
            with pytest.raises(HostUnreachable) as refused, reach.failures():
                pass  # a step does not start on a dead tunnel
            assert "the SSH tunnel to its port" in str(refused.value)
            assert f"staging's host deploy@{host.address}:22" in str(refused.value)
            # The client's own error (a refused connection on this machine's loopback) becomes
            # HostUnreachable, with it as the cause.
            httpx.get(url, timeout=5)
        assert isinstance(caught.value.__cause__, httpx.HTTPError)
    finally:
        if cut:
            host.restore()
    assert not ssh_clients_to(host.address), "closed: no ssh left"
    assert reach.tunnels == {}


def test_an_unreachable_host_fails_the_command_within_its_connect_timeout(host: TestHost, tmp_path: Path) -> None:
    env = load_settings(config(tmp_path, host)).environment("staging")
    host.cut()
    try:
        started = time.monotonic()
        with pytest.raises(HostUnreachable) as caught, Reach(env):
            pass
        assert time.monotonic() - started < 12
        assert f"staging's host deploy@{host.address}:22" in str(caught.value)
    finally:
        host.restore()
    assert not ssh_clients_to(host.address)
