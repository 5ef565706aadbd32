"""Which Dagster instance a command records on: the local one with the production queue, the
platform's while it runs, one line when it cannot be opened; and never the operator's from a test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from ultra_ops.cli import main
from ultra_ops.defs.shared.launch import ensure_dagster_home, local_instance_yaml
from ultra_ops.platform.attach import platform_environment
from ultra_ops.platform.instance import PRODUCTION_INSTANCE
from ultra_ops_tests.support.configs import write_multi_config
from ultra_ops_tests.support.repos import make_repo
from ultra_ops_tests.support.services import REPO
from ultra_ops_tests.support.user_instance import USER_HOME, recorded_runs

pytestmark = pytest.mark.unit


def test_the_local_instance_has_the_production_queue_and_old_files_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    production = yaml.safe_load(PRODUCTION_INSTANCE.read_text())["run_coordinator"]
    assert yaml.safe_load(local_instance_yaml(tmp_path))["run_coordinator"] == production
    # A home ultra_ops wrote before it carried the queue is brought up to date; an operator's is theirs.
    old, mine = tmp_path / "old", tmp_path / "mine"
    old.mkdir()
    mine.mkdir()
    legacy = local_instance_yaml(old).split("\n", 1)[1].split("run_coordinator:")[0]
    (old / "dagster.yaml").write_text(legacy)
    (mine / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for home in (old, mine):
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        assert ensure_dagster_home() == home
    assert yaml.safe_load((old / "dagster.yaml").read_text())["run_coordinator"] == production
    assert (mine / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_an_instance_that_needs_unset_variables_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """DAGSTER_HOME naming an instance on PostgreSQL without its DAGSTER_PG_*: one line, exit 2."""
    config = write_multi_config(tmp_path, {"development": "u_d"}, redis_prefix="unused:")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PRODUCTION_INSTANCE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.delenv(name, raising=False)
    assert platform_environment(os.environ) == {}  # not a platform's home: nothing to fill in
    assert main(["stop", "--environment", "development", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "DAGSTER_PG_HOST, DAGSTER_PG_USER, DAGSTER_PG_PASSWORD, DAGSTER_PG_DB" in err and str(home) in err


def test_tests_record_in_a_home_of_their_own_never_the_operators(tmp_path: Path) -> None:
    """Without the dagster_home fixture (as test_release_branches' tick test), a command records in
    the session's home: not the repository's .dagster_home, not a previous test's folder."""
    home = Path(os.environ["DAGSTER_HOME"])
    assert home.name.startswith("session_dagster_home") and REPO not in home.parents
    before = recorded_runs(USER_HOME)
    repo, _ = make_repo(tmp_path)
    config = write_multi_config(tmp_path, {"staging": "u_s"}, redis_prefix="unused:")
    text = config.read_text().replace("[defaults]\n", f'[defaults]\ngit_repo = "{repo}"\ngit_push = false\n', 1)
    config.write_text(text)
    assert main(["release-branch", "--tag", "v4.5.6", "--config", str(config)]) == 0
    assert os.environ["DAGSTER_HOME"] == str(home)
    with DagsterInstance.from_config(str(home)) as instance:
        assert any(run.tags.get("ultra_ops/version") == "v4.5.6" for run in instance.get_runs())
    assert recorded_runs(USER_HOME) == before
    assert not (tmp_path / ".dagster_home").exists()  # the config's folder is no default any more here


def test_dev_ui_runs_on_the_clis_home_with_its_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`./dev ui` asks platform.attach for its DAGSTER_HOME: the CLI's, made ready with the queue."""
    from ultra_ops.platform.attach import main as dev_ui_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert dev_ui_home() == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "home")
    instance = yaml.safe_load((tmp_path / "home" / "dagster.yaml").read_text())
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
