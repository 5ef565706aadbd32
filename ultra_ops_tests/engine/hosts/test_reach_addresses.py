"""Which addresses of a hosted environment go through a tunnel, and how they are rewritten: pure,
no host needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultra_ops.engine.hosts.reach import Reach, is_loopback, loopback_ports, rewritten
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import hosted_config

pytestmark = pytest.mark.unit


SECTIONS = """[environments.staging.verify]
health_urls = ["http://127.0.0.1:8101/health?detail=true", "http://10.0.0.5:8101/health"]
endpoints = [{ name = "version", url = "http://localhost:8101/api/v1/version" }]
[environments.staging.verify.performance]
endpoints = [{ name = "prompts", url = "https://127.0.0.1/api/v1/prompts", p95_ms = 300 }]
[environments.staging.verify.smoke.login]
base_url = "http://127.0.0.1:8101"
steps = [{ name = "health", path = "/health" }]
[environments.staging.checklist]
rate_limit_url = "http://[::1]:8101/api/v1/version"
"""


def hosted(tmp_path: Path, host_table: bool = True) -> Path:
    return hosted_config(
        tmp_path,
        'address = "10.0.0.5"\nuser = "deploy"\n' if host_table else None,
        database=("localhost", 5501),
        redis_url="redis://127.0.0.1:6501/2",
        sections=SECTIONS,
    )


def test_loopback_names() -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.0.1.1", "localhost", "LOCALHOST", "::1", "[::1]"))
    assert not any(is_loopback(a) for a in ("10.0.0.5", "db.example.com", "0.0.0.0", "::", "localhost.example.com"))


def test_loopback_addresses_move_to_the_tunnels_and_others_stay(tmp_path: Path) -> None:
    env = load_settings(hosted(tmp_path)).environment("staging")
    assert loopback_ports(env) == {
        5501: "database",
        6501: "redis",
        8101: "http://127.0.0.1:8101/health?detail=true",
        443: "https://127.0.0.1/api/v1/prompts",
    }
    reached = rewritten(env, {5501: 40001, 6501: 40002, 8101: 40003, 443: 40004})
    assert (reached.database.host, reached.database.port) == ("127.0.0.1", 40001)
    assert reached.database.name == "ultra_staging" and reached.database.user == "ultra"
    assert reached.redis is not None and reached.redis.url == "redis://127.0.0.1:40002/2"
    assert reached.verify.health_urls == ("http://127.0.0.1:40003/health?detail=true", "http://10.0.0.5:8101/health")
    assert reached.verify.endpoints[0].url == "http://127.0.0.1:40003/api/v1/version"
    assert reached.verify.performance is not None
    assert reached.verify.performance.endpoints[0].url == "https://127.0.0.1:40004/api/v1/prompts"
    assert reached.verify.smoke[0].base_url == "http://127.0.0.1:40003"
    assert reached.checklist.rate_limit_url == "http://127.0.0.1:40003/api/v1/version"
    # Everything else is the environment as configured: its files, its host, its name.
    assert (reached.env_file, reached.host, reached.name) == (env.env_file, env.host, env.name)


def test_without_a_host_the_environment_is_reached_as_written(tmp_path: Path) -> None:
    env = load_settings(hosted(tmp_path, host_table=False)).environment("staging")
    with Reach(env) as reached:
        assert reached is env
