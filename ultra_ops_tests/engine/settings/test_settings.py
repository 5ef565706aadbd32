"""The config file: the shipped one loads, and each kind of mistake gets one error naming file, key, reason."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ultra_ops.cli import main
from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.settings import default_config_path, load_settings
from ultra_ops_tests.support.configs import write_config, write_multi_config
from ultra_ops_tests.support.services import PG, REPO

pytestmark = pytest.mark.unit


def test_shipped_config_runs_the_three_environments_apart_on_this_machine() -> None:
    settings = load_settings(REPO / "ultra_ops.toml")
    assert list(settings.environments) == ["development", "staging", "production"]
    envs = list(settings.environments.values())
    assert all(e.runtime == "process" for e in envs)
    assert [p.port for e in envs for p in e.processes if p.name == "backend"] == [8000, 8001, 8002]
    assert [e.database.name for e in envs] == ["ultra_dev", "ultra_staging", "ultra_prod"]
    assert [e.redis.url for e in envs if e.redis] == [f"redis://127.0.0.1:6379/{i}" for i in range(3)]
    # No secret that a fresh machine lacks: the pre-release checklist would refuse the deploy. The
    # authentication password is optional (unset: authentication off, the login smoke step skipped),
    # and the LLM provider is the keyless stand-in each environment runs.
    assert all(not e.required_secret_env_names() for e in envs)
    assert all(p.auth == "none" and p.api_key_env is None for e in envs for p in e.llm_providers)
    for kind in ("root", "env_file", "log_dir", "state_dir", "backups_path"):
        paths = [getattr(e, kind) for e in envs]
        assert len(set(paths)) == 3, kind
        assert all(REPO / "var" in p.parents for p in paths), kind
    for a, b in itertools.combinations(envs, 2):
        for p in a.owned_paths().values():
            for q in b.owned_paths().values():
                assert p != q and p not in q.parents and q not in p.parents, (a.name, b.name, p, q)
    dev, staging, prod = envs
    assert dev.backups_path == REPO / "var" / "backups" / "development"
    # Production checks at least as strictly as staging, staging as development.
    for stricter, looser in ((prod, staging), (staging, dev)):
        assert stricter.database.latency_budget_ms <= looser.database.latency_budget_ms
        assert max(e.latency_budget_ms for e in stricter.verify.endpoints) <= min(
            e.latency_budget_ms for e in looser.verify.endpoints
        )
    assert prod.min_free_disk_mb >= 1024


def test_compose_example_runs_staging_and_production_apart() -> None:
    settings = load_settings(REPO / "deploy" / "ultra_ops.compose.toml")
    assert list(settings.environments) == ["staging", "production"]
    staging, prod = settings.environments.values()
    assert staging.runtime == prod.runtime == "compose"
    assert staging.compose_project == "ultra-staging" and prod.compose_project == "ultra-production"
    for kind in ("root", "env_file", "compose_file", "log_dir", "state_dir", "backups_path"):
        assert getattr(staging, kind) != getattr(prod, kind), kind
    assert staging.database.password_env == "ULTRA_STAGING_DB_PASSWORD"
    assert prod.database.password_env == "ULTRA_PROD_DB_PASSWORD"
    assert {p.api_key_env for p in prod.llm_providers} == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert prod.env_file == Path("/srv/ultra-ai/production/.env.production")


def test_environments_sharing_a_file_or_folder_are_refused(tmp_path: Path) -> None:
    path = write_multi_config(tmp_path, {"staging": "db_a", "production": "db_b"}, redis_prefix="x:")
    text = path.read_text()
    shared = text.replace(
        f'log_dir = "{tmp_path / "production" / "logs"}"', f'log_dir = "{tmp_path / "staging" / "logs" / "production"}"'
    )
    path.write_text(shared)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "environments.production.log_dir"
    assert "is inside staging's log_dir" in info.value.reason
    path.write_text(
        text.replace(
            f'state_dir = "{tmp_path / "production" / "state"}"', f'state_dir = "{tmp_path / "staging" / "state"}"'
        )
    )
    with pytest.raises(ConfigError, match="environments.production.state_dir: .* is staging's state_dir"):
        load_settings(path)


def test_a_shared_config_file_is_backed_up_but_not_restored(tmp_path: Path) -> None:
    three = load_settings(write_multi_config(tmp_path, {"staging": "a", "production": "b"}, redis_prefix="x:"))
    staging = three.environment("staging")
    assert staging.config_file in staging.state_files()
    assert staging.restored_files() == [staging.env_file]
    (tmp_path / "alone").mkdir()
    alone = load_settings(write_config(tmp_path / "alone", "c")).environment("staging")
    assert alone.config_file in alone.restored_files()


def test_config_selected_by_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, "some_db")
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(path))
    settings = load_settings()
    assert settings.path == path.resolve() and list(settings.environments) == ["staging"]


@pytest.mark.parametrize(
    "edit, key, reason",
    [
        (
            lambda t: t.replace('runtime = "process"', 'runtime = "kubernetes"'),
            "environments.staging.runtime",
            "expected one of process, compose",
        ),
        (
            lambda t: t.replace(f"port = {PG['port']}", f'port = "{PG["port"]}"'),
            "environments.staging.database.port",
            "expected an integer",
        ),
        (
            lambda t: t.replace(f"port = {PG['port']}", "port = 99999"),
            "environments.staging.database.port",
            "not a TCP port",
        ),
        (
            lambda t: t.replace("timeout_s = 3", "timeout_s = -1"),
            "environments.staging.verify.timeout_s",
            "greater than 0 and at most 600 seconds, got -1",
        ),
        (
            lambda t: t.replace("timeout_s = 3", "timeout_s = 0"),
            "environments.staging.verify.timeout_s",
            "greater than 0",
        ),
        (
            lambda t: t.replace('format = "directory"', 'format = "zip"'),
            "environments.staging.backup.format",
            "expected one of directory, custom",
        ),
        (
            lambda t: t.replace('format = "directory"', 'format = "directory"\nlock_wait_timeout_s = 0'),
            "environments.staging.backup.lock_wait_timeout_s",
            "expected 0.1 to 3600 seconds, got 0",
        ),
        (
            lambda t: t.replace('format = "directory"', 'format = "directory"\nlock_wait_timeout_s = 21600'),
            "environments.staging.backup.lock_wait_timeout_s",
            "expected 0.1 to 3600 seconds, got 21600",
        ),
        (
            lambda t: t.replace("probe_queries", "probe_querys"),
            "environments.staging.database.probe_querys",
            "unknown key",
        ),
        (
            lambda t: t.replace('user = "', 'password_env = "hunter2 secret"\nuser = "'),
            "environments.staging.database.password_env",
            "must name an environment variable",
        ),
        (
            lambda t: t.replace("[environments.staging]", "[environments.qa]").replace(
                "environments.staging.", "environments.qa."
            ),
            "environments.qa",
            "unknown environment",
        ),
        (
            lambda t: t.replace('url = "redis://', 'url = "redis://:pw@'),
            "environments.staging.redis.url",
            "must not carry credentials",
        ),
        (lambda t: t + "\n[oops\n", "", "not valid TOML"),
    ],
)
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


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("timeout_s = 3", "timeout_s = inf", "environments.staging.verify.timeout_s"),
        ("timeout_s = 3", "timeout_s = nan", "environments.staging.verify.timeout_s"),
        ("backoff_s = 0.1", "backoff_s = +inf", "environments.staging.verify.backoff_s"),
        ("health_timeout_s = 20", "health_timeout_s = nan", "environments.staging.health_timeout_s"),
        ("health_timeout_s = 20", "health_timeout_s = 20\nlock_wait_s = inf", "environments.staging.lock_wait_s"),
        ('user = "', 'latency_budget_ms = nan\nuser = "', "environments.staging.database.latency_budget_ms"),
    ],
)
def test_non_finite_numbers_exit_2_naming_the_key(tmp_path: Path, monkeypatch, capsys, old, new, key) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    path = write_config(tmp_path, "some_db")
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    assert main(["deploy", "--environment", "staging", "--tag", "v1.0.0", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert key in err and str(path) in err
    assert not (tmp_path / "home").exists() and not (tmp_path / "backups").exists()


def test_process_env_names_must_be_variable_names(tmp_path: Path) -> None:
    path = write_config(tmp_path, "some_db")
    table = "[environments.staging.processes.backend]"
    path.write_text(path.read_text().replace(table, table + '\nenv = { "A\\nB" = "x" }'))
    with pytest.raises(ConfigError, match="not a valid environment variable name"):
        load_settings(path)


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda t: t.replace("processes.backend]", 'processes."../x"]'), "environments.staging.processes.../x"),
        (
            lambda t: t.replace("processes.backend]", 'processes."backend\\n"]'),
            "environments.staging.processes.backend\n",
        ),
        (
            lambda t: t.replace('runtime = "process"', 'runtime = "process"\ncompose_project = "Ultra Staging"'),
            "environments.staging.compose_project",
        ),
    ],
)
def test_names_that_become_paths_or_arguments_are_checked_whole(tmp_path: Path, edit, key: str) -> None:
    path = write_config(tmp_path, "some_db")
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == key
