"""Config numbers out of any sensible range, and environments sharing a port: one ConfigError naming
the file, the key (both environments' keys for a port) and the range or the reason."""

from __future__ import annotations

import ipaddress
import socket
import textwrap
from pathlib import Path

import pytest

from ultra_ops.cli import main
from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_config, write_multi_config
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG, REPO

pytestmark = pytest.mark.unit

S = "environments.staging"
ENDPOINT = '{ name = "a", url = "http://127.0.0.1:1/a", latency_budget_ms = -1 }'


@pytest.mark.parametrize(
    "old, new, key, reason",
    [
        (
            'format = "directory"',
            'format = "directory"\nkeep = 1000000000000000000000000',
            f"{S}.backup.keep",
            "expected 0 to 10000 backups (0: every one), got 1e+24",
        ),
        ('format = "directory"', 'format = "directory"\njobs = 100000', f"{S}.backup.jobs", "expected 0 to 256"),
        ('format = "directory"', 'format = "directory"\ncompression = 12', f"{S}.backup.compression", "0 to 9"),
        (
            'format = "directory"',
            'format = "directory"\ntimeout_s = 1e9',
            f"{S}.backup.timeout_s",
            "greater than 0 and at most 604800 seconds (a week), got 1e+09",
        ),
        (
            'format = "directory"',
            'format = "directory"\nretention = { daily = 5000 }',
            f"{S}.backup.retention.daily",
            "expected 0 to 1000, got 5000",
        ),
        (
            "health_timeout_s = 20",
            "health_timeout_s = 1e9",
            f"{S}.health_timeout_s",
            "expected 0 to 3600 seconds, got 1e+09",
        ),
        (
            "health_timeout_s = 20",
            "health_timeout_s = 20\nlock_wait_s = 1e12",
            f"{S}.lock_wait_s",
            "expected 0 to 86400 seconds (a day)",
        ),
        (
            "health_timeout_s = 20",
            "health_timeout_s = 20\nmin_free_disk_mb = -5",
            f"{S}.min_free_disk_mb",
            "expected 0 to 1000000000 MB, got -5",
        ),
        ("retries = 1", "retries = 1000000", f"{S}.verify.retries", "expected 0 to 20, got 1000000"),
        ("timeout_s = 3", "timeout_s = 86400", f"{S}.verify.timeout_s", "at most 600 seconds, got 86400"),
        ("backoff_s = 0.1", "backoff_s = 1e6", f"{S}.verify.backoff_s", "expected 0 to 600 seconds"),
        (
            "retries = 1",
            f"retries = 1\nendpoints = [{ENDPOINT}]",
            f"{S}.verify.endpoints[0].latency_budget_ms",
            "greater than 0 and at most 600000 ms, got -1",
        ),
        (
            'health_url = "',
            'stop_timeout_s = 1e9\nhealth_url = "',
            f"{S}.processes.backend.stop_timeout_s",
            "expected 0 to 600 seconds",
        ),
        (
            'user = "',
            'latency_budget_ms = 1e12\nuser = "',
            f"{S}.database.latency_budget_ms",
            "expected 0 to 600000 ms",
        ),
        (
            'user = "',
            'connect_timeout_s = 0\nuser = "',
            f"{S}.database.connect_timeout_s",
            "greater than 0 and at most 300 seconds, got 0",
        ),
        (f"port = {PG['port']}", "port = 70000", f"{S}.database.port", "not a TCP port: expected 1 to 65535"),
        (
            "backoff_s = 0.1",
            "backoff_s = 0.1\n[environments.staging.verify.window]\ndecision_wait_s = 1e7",
            f"{S}.verify.window.decision_wait_s",
            "at most 604800 seconds (a week)",
        ),
    ],
)
def test_a_number_out_of_range_names_key_and_range(tmp_path: Path, old: str, new: str, key: str, reason: str) -> None:
    path = write_config(tmp_path, "some_db")
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == key and reason in info.value.reason, str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "table, reason",
    [
        ("retries = 11", "expected 0 to 10, got 11"),
        ("timeout_s = 1e6", "greater than 0 and at most 300 seconds"),
    ],
)
def test_notification_numbers_have_a_range(tmp_path: Path, table: str, reason: str) -> None:
    path = write_config(tmp_path, "some_db")
    path.write_text(f"[notifications]\n{table}\n" + path.read_text())
    with pytest.raises(ConfigError, match=r"notifications\.") as info:
        load_settings(path)
    assert reason in info.value.reason


# -- ports ---------------------------------------------------------------------------------------


def _two(tmp_path: Path, dev_port: int, staging_port: int) -> Path:
    return write_multi_config(
        tmp_path,
        {"development": "db_a", "staging": "db_b"},
        redis_prefix="x:",
        ports={"development": dev_port, "staging": staging_port},
    )


def test_two_environments_on_one_backend_port_are_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    port = free_port()
    path = _two(tmp_path, port, port)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "environments.staging.processes.backend.port"
    assert info.value.reason.startswith(f"port {port} is also development's processes.backend.port")
    # Through the CLI: exit 2, one line, before a run or a verification against the wrong service.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["verify", "--environment", "staging", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config error in ") and len(err.strip().splitlines()) == 1
    assert "environments.staging.processes.backend.port" in err and "development's" in err
    assert not (tmp_path / "home").exists()


def test_a_check_calling_another_environments_process_port_is_refused(tmp_path: Path) -> None:
    dev, staging = free_port(), free_port()
    path = _two(tmp_path, dev, staging)
    text = path.read_text()
    ours = f'health_urls = ["http://127.0.0.1:{staging}/health?detail=true"]'
    assert ours in text
    path.write_text(text.replace(ours, f'health_urls = ["http://localhost:{dev}/health?detail=true"]'))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "environments.staging.verify.health_urls[0]"
    assert f"calls port {dev}, development's processes.backend.port" in info.value.reason


def test_a_stand_in_port_is_one_environments_alone(tmp_path: Path) -> None:
    dev, staging, llm = free_port(), free_port(), free_port()
    path = _two(tmp_path, dev, staging)
    standin = f'[environments.development.processes.llm]\ncommand = ["true"]\nport = {llm}\n'
    provider = (
        '[[environments.staging.llm_providers]]\nname = "local"\nauth = "none"\n'
        f'models_url = "http://127.0.0.1:{llm}/v1/models"\n'
    )
    path.write_text(path.read_text() + standin + provider)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "environments.staging.llm_providers[0].models_url"
    assert "development's processes.llm.port" in info.value.reason


def _no_process_ports(tmp_path: Path, dev_url: str, staging_url: str, provider_url: str) -> Path:
    """Two environments whose services listen where ultra_ops cannot see (as published by Compose
    from the env file): their checks' URLs are all the config says of their ports."""
    sections = ['timezone = "UTC"\n']
    for env, url in (("development", dev_url), ("staging", staging_url)):
        sections.append(f"""
            [environments.{env}]
            root = "{tmp_path / env}"
            log_dir = "{tmp_path / env / "logs"}"
            state_dir = "{tmp_path / env / "state"}"
            backup_dir = "{tmp_path / "backups"}"
            [environments.{env}.database]
            name = "db_{env}"
            user = "{PG["user"]}"
            [environments.{env}.processes.backend]
            command = ["true"]
            [environments.{env}.verify]
            health_urls = ["{url}"]
            [[environments.{env}.llm_providers]]
            name = "local"
            auth = "none"
            models_url = "{provider_url}"
        """)
    path = tmp_path / "ultra_ops.toml"
    path.write_text("".join(textwrap.dedent(s) for s in sections))
    return path


def test_two_environments_checking_one_loopback_port_are_refused(tmp_path: Path) -> None:
    shared_model_server = "http://127.0.0.1:11434/v1/models"  # run by neither: both may call it
    path = _no_process_ports(tmp_path, "http://127.0.0.1:8000/health", "http://[::1]:8000/h", shared_model_server)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "environments.staging.verify.health_urls[0]"
    assert "calls port 8000, as development's verify.health_urls[0] does" in info.value.reason
    # Other machines' ports are theirs; a port each, or a model server of neither, is fine.
    for staging_url in ("https://staging.example.com/health", "http://127.0.0.1:8001/health"):
        path = _no_process_ports(tmp_path, "https://dev.example.com/health", staging_url, shared_model_server)
        assert list(load_settings(path).environments) == ["development", "staging"]


def _an_address_of_this_machine_not_loopback() -> str:
    """The address this machine would send from (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("this machine has no route off loopback")
        address = probe.getsockname()[0]
    if ipaddress.ip_address(address).is_loopback:
        pytest.skip("this machine has no address but loopback")
    return address


def test_two_environments_checking_one_port_on_another_address_of_this_machine_are_refused(tmp_path: Path) -> None:
    """Compose environments publish on Docker's bridge address (172.17.0.1) for the platform's run
    containers: not loopback, but this machine's all the same."""
    mine = _an_address_of_this_machine_not_loopback()
    provider = "http://127.0.0.1:11434/v1/models"
    path = _no_process_ports(tmp_path, f"http://{mine}:8000/health", "http://127.0.0.1:8000/h", provider)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "environments.staging.verify.health_urls[0]"
    assert "calls port 8000, as development's verify.health_urls[0] does" in info.value.reason
    # An address of no interface here (TEST-NET-2) is another machine's.
    path = _no_process_ports(tmp_path, "http://198.51.100.254:8000/health", "http://127.0.0.1:8000/h", provider)
    assert list(load_settings(path).environments) == ["development", "staging"]


def test_two_compose_environments_in_one_project_are_refused(tmp_path: Path) -> None:
    text = (REPO / "deploy" / "ultra_ops.compose.toml").read_text().replace("/srv/ultra-ai", str(tmp_path))
    path = tmp_path / "ultra_ops.toml"
    path.write_text(text.replace('compose_project = "ultra-production"', 'compose_project = "ultra-staging"'))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "environments.production.compose_project"
    assert "'ultra-staging' is also staging's" in info.value.reason


def test_environments_on_hosts_of_their_own_may_share_ports_and_project_names(tmp_path: Path) -> None:
    """Loopback is per machine: two environments on two hosts may both publish 5432 and call their
    project ultra; on one host they may not."""
    text = (REPO / "deploy" / "ultra_ops.compose.toml").read_text().replace("/srv/ultra-ai", str(tmp_path))
    text = text.replace("172.17.0.1:8002", "127.0.0.1:8001").replace('"172.17.0.1"', '"127.0.0.1"')
    text = text.replace("172.17.0.1", "127.0.0.1").replace("port = 5432", "port = 5433")
    text = text.replace('"redis://127.0.0.1:6379/0"', '"redis://127.0.0.1:6380/0"')
    text = text.replace('compose_project = "ultra-production"', 'compose_project = "ultra-staging"')
    path = tmp_path / "ultra_ops.toml"

    def hosts(staging: str, production: str) -> Path:
        path.write_text(
            text
            + f'\n[environments.staging.host]\naddress = "{staging}"\nuser = "deploy"\nroot = "/srv/ultra/staging"\n'
            + f'\n[environments.production.host]\naddress = "{production}"\nuser = "deploy"\n'
            + 'root = "/srv/ultra/production"\n'
        )
        return path

    envs = load_settings(hosts("10.0.0.5", "10.0.0.6")).environments
    staging, production = envs["staging"], envs["production"]
    assert (staging.database.port, staging.compose_project) == (production.database.port, production.compose_project)
    with pytest.raises(ConfigError) as info:
        load_settings(hosts("10.0.0.5", "10.0.0.5"))
    assert info.value.key == "environments.production.compose_project"
