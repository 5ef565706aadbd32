"""`[environments.X.host]`: read with its defaults, and each mistake one error naming file, key, reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import config_with_host as config

pytestmark = pytest.mark.unit

H = "environments.staging.host"


def test_defaults_and_paths(tmp_path: Path) -> None:
    host = load_settings(config(tmp_path, 'address = "10.0.0.5"\nuser = "deploy"')).environment("staging").host
    assert host is not None
    assert (host.address, host.user, host.port, host.identity_file) == ("10.0.0.5", "deploy", 22, None)
    assert host.known_hosts == tmp_path / "known_hosts", "beside the config by default"
    assert host.connect_timeout_s == 5.0
    assert host.describe() == "deploy@10.0.0.5:22"
    keys = 'address = "prod-1.example.com"\nuser = "deploy"\nport = 2222\nidentity_file = "keys/id"\n'
    keys += 'known_hosts = "/etc/ultra/known_hosts"\nconnect_timeout_s = 2.5'
    host = load_settings(config(tmp_path, keys)).environment("staging").host
    assert host is not None
    assert host.identity_file == tmp_path / "keys" / "id"
    assert host.known_hosts == Path("/etc/ultra/known_hosts")
    assert (host.port, host.connect_timeout_s) == (2222, 2.5)


def test_an_environment_without_a_host_runs_here(tmp_path: Path) -> None:
    path = config(tmp_path, "").read_text().replace("[environments.staging.host]", "")
    (tmp_path / "ultra_ops.toml").write_text(path)
    assert load_settings(tmp_path / "ultra_ops.toml").environment("staging").host is None


@pytest.mark.parametrize(
    "keys, key, reason",
    [
        ('user = "deploy"', f"{H}.address", "is required"),
        ('address = "10.0.0.5"', f"{H}.user", "is required"),
        ('address = "-oProxyCommand=x"\nuser = "d"', f"{H}.address", "is not a host name or IP address"),
        ('address = "a b"\nuser = "d"', f"{H}.address", "is not a host name or IP address"),
        ('address = "h"\nuser = "-l"', f"{H}.user", "is not a user name"),
        ('address = "h"\nuser = "d"\nport = 70000', f"{H}.port", "70000 is not a TCP port"),
        ('address = "h"\nuser = "d"\nconnect_timeout_s = 0', f"{H}.connect_timeout_s", "greater than 0"),
        ('address = "h"\nuser = "d"\nconnect_timeout_s = 1e6', f"{H}.connect_timeout_s", "at most 120 seconds"),
        ('address = "h"\nuser = "d"\nknown_hosts = "a b"', f"{H}.known_hosts", "contains whitespace"),
        ('address = "h"\nuser = "d"\nidentity_file = "%d/key"', f"{H}.identity_file", "contains whitespace"),
        ('address = "h"\nuser = "d"\nidentity_file = ""', f"{H}.identity_file", "is empty"),
        ('address = "h"\nuser = "d"\npassword = "x"', f"{H}.password", "unknown key"),
    ],
)
def test_mistakes(tmp_path: Path, keys: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config(tmp_path, keys))
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert caught.value.path == str(tmp_path / "ultra_ops.toml")


def test_key_material_is_refused_and_not_repeated(tmp_path: Path) -> None:
    secret = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
    material = f'"""-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n-----END OPENSSH PRIVATE KEY-----"""'
    with pytest.raises(ConfigError) as caught:
        load_settings(config(tmp_path, f'address = "h"\nuser = "d"\nidentity_file = {material}'))
    assert caught.value.key == f"{H}.identity_file"
    assert "holds key material" in caught.value.reason
    assert secret not in str(caught.value)


def test_a_host_needs_the_compose_runtime(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config(tmp_path, 'address = "h"\nuser = "d"', runtime="process"))
    assert caught.value.key == H
    assert "compose runtime" in caught.value.reason


def test_two_environments_on_one_host_keep_their_own_folders(tmp_path: Path) -> None:
    text = config(tmp_path, 'address = "h"\nuser = "deploy"\nroot = "/srv/ultra"').read_text()
    production = (
        text.split("[environments.staging]", 1)[1]
        .replace("environments.staging", "environments.production")
        .replace(str(tmp_path / "root"), str(tmp_path / "prod"))
    )
    path = tmp_path / "ultra_ops.toml"
    path.write_text(text + "[environments.production]" + production)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.key == "environments.production.host.root"
    assert "/srv/ultra on h is staging's too" in caught.value.reason
    path.write_text(text + "[environments.production]" + production.replace("/srv/ultra", "/srv/ultra-prod"))
    assert load_settings(path).environment("production").host.root.name == "ultra-prod"  # type: ignore[union-attr]
