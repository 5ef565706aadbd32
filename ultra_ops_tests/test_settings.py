"""The config file: the shipped one loads, and each kind of mistake gets one error naming file, key, reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, write_config

from ultra_ops.cli import main
from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.settings import default_config_path, load_settings


def test_shipped_config_names_the_three_environments() -> None:
    settings = load_settings(REPO / "ultra_ops.toml")
    assert list(settings.environments) == ["development", "staging", "production"]
    dev, prod = settings.environments["development"], settings.environments["production"]
    assert dev.runtime == "process" and prod.runtime == "compose"
    assert dev.env_file.name == ".env.development" and prod.env_file.name == ".env.production"
    assert {p.api_key_env for p in prod.llm_providers} == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert dev.backups_path == REPO / "var" / "backups" / "development"


def test_config_selected_by_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, "some_db")
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(path))
    settings = load_settings()
    assert settings.path == path.resolve() and list(settings.environments) == ["staging"]


@pytest.mark.parametrize("edit, key, reason", [
    (lambda t: t.replace('runtime = "process"', 'runtime = "kubernetes"'), "environments.staging.runtime",
     "expected one of process, compose"),
    (lambda t: t.replace("port = 5432", 'port = "5432"'), "environments.staging.database.port", "expected an integer"),
    (lambda t: t.replace("port = 5432", "port = 99999"), "environments.staging.database.port", "not a TCP port"),
    (lambda t: t.replace("timeout_s = 3", "timeout_s = -1"), "environments.staging.verify.timeout_s", "negative"),
    (lambda t: t.replace("timeout_s = 3", "timeout_s = 0"), "environments.staging.verify.timeout_s",
     "greater than 0"),
    (lambda t: t.replace('format = "directory"', 'format = "zip"'), "environments.staging.backup.format",
     "expected one of directory, custom"),
    (lambda t: t.replace("probe_queries", "probe_querys"), "environments.staging.database.probe_querys",
     "unknown key"),
    (lambda t: t.replace('user = "', 'password_env = "hunter2 secret"\nuser = "'),
     "environments.staging.database.password_env", "must name an environment variable"),
    (lambda t: t.replace("[environments.staging]", "[environments.qa]").replace("environments.staging.",
                                                                                 "environments.qa."),
     "environments.qa", "unknown environment"),
    (lambda t: t.replace('url = "redis://127.0.0.1:6379/0"', 'url = "redis://:pw@127.0.0.1:6379/0"'),
     "environments.staging.redis.url", "must not carry credentials"),
    (lambda t: t + "\n[oops\n", "", "not valid TOML"),
])
def test_bad_config_names_file_key_and_reason(tmp_path: Path, edit, key: str, reason: str) -> None:
    path = write_config(tmp_path, "some_db")
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert info.value.key == key
    assert "hunter2" not in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")


def test_cli_exits_2_on_bad_config_before_anything_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    path = write_config(tmp_path, "some_db")
    path.write_text(path.read_text().replace("retries = 1", "retries = 1.5"))
    assert main(["deploy", "--environment", "staging", "--tag", "v1.0.0", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "environments.staging.verify.retries" in err and str(path) in err
    assert not (tmp_path / "home").exists() and not (tmp_path / "backups").exists()


def test_default_config_is_the_repository_one_outside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ULTRA_OPS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_config_path() == REPO / "ultra_ops.toml"
    assert load_settings().path == (REPO / "ultra_ops.toml").resolve()
