"""What an operator sees in the UI of `./dev ui`'s instance (the CLI's, with the production queue):
deploy_job's form offers only a newer version and holds only what an operator sets, a downgrade
launched from it fails its first step and changes nothing, the Runs list says who launched a CLI run
without technical chips, and the checklist observations belong to declared assets.

One webserver and daemon for the module, on a SQLite home of its own, loading the code location
as `./dev ui` does; three environments on databases of their own; no service is started.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from ultra_ops.cli import main
from ultra_ops.defs.release.config import DeployConfig
from ultra_ops.defs.shared import tags
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.release.records import find_releases
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import Settings, load_settings
from ultra_ops_tests.support.configs import write_multi_config
from ultra_ops_tests.support.databases import create_database, drop_databases
from ultra_ops_tests.support.releases import running
from ultra_ops_tests.support.webserver import Webserver

REPO_SELECTOR = {"repositoryName": "__repository__", "repositoryLocationName": "ultra_ops"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("operator_view")
    base = f"uo_test_{uuid.uuid4().hex[:12]}"
    databases = {env: f"{base}_{env[:4]}" for env in ("development", "staging", "production")}
    loaded = None
    try:
        for name in databases.values():
            create_database(name)
        config = write_multi_config(tmp, databases, redis_prefix=f"uo_test:{base}:")
        loaded = load_settings(config)
        for env in loaded.environments.values():
            env.env_file.parent.mkdir(parents=True, exist_ok=True)
            env.env_file.write_text("ULTRA_VERSION=\n")
            env.env_file.chmod(0o600)
        # Staging runs v1.1.0 and development has v1.2.0 for it; production runs v1.2.0 already.
        running(loaded.environments["staging"], "v1.1.0")
        running(loaded.environments["development"], "v1.2.0")
        running(loaded.environments["production"], "v1.2.0")
        yield loaded
    finally:
        for env in loaded.environments.values() if loaded else ():
            get_runtime(env).down()  # none should run: a deploy that got past its plan would start one
        drop_databases(base)


@pytest.fixture(scope="module")
def web(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    home = tmp_path_factory.mktemp("operator_view_home")
    with Webserver(home, env={"ULTRA_OPS_CONFIG": str(settings.path)}, queue=True) as server:
        server.start_daemon()  # `./dev ui` runs one: it takes queued launches to the code location
        yield server


def _partition_form(web: Webserver, environment: str) -> dict:
    data = web.query(_PARTITION_CONFIG, r=REPO_SELECTOR, ps="deploy_job_partition_set", p=environment)
    return yaml.safe_load(data["partitionSetOrError"]["partition"]["runConfigOrError"]["yaml"])


def _failure(home: Path, run_id: str) -> str:
    with DagsterInstance.from_config(str(home)) as instance:
        return " ".join(
            e.dagster_event.step_failure_data.user_failure_data.description
            for e in instance.all_logs(run_id)
            if e.dagster_event and e.dagster_event.is_step_failure
        )


def test_the_deploy_form_offers_only_a_newer_version_and_what_an_operator_sets(web: Webserver) -> None:
    forms = {env: _partition_form(web, env)["ops"]["deploy_plan"]["config"] for env in ("staging", "production")}
    assert forms["staging"] == {"tag": "v1.2.0"}  # the next staging tick's version, newer than v1.1.0
    assert forms["production"] == {"tag": None}  # v1.2.0 runs there: nothing offered, not the same one
    schema = web.query(_DEFAULT_YAML, s={**REPO_SELECTOR, "pipelineName": "deploy_job"})
    defaults = yaml.safe_load(schema["runConfigSchemaOrError"]["rootDefaultYaml"])
    assert "resources" not in defaults  # no config_path: '' nor lock_wait_s: -1 in the form
    assert set(defaults["ops"]["deploy_plan"]["config"]) <= set(DeployConfig.model_fields)
    assert all(field.description for field in DeployConfig.model_fields.values())


def test_a_downgrade_launched_from_the_ui_fails_its_first_step_and_changes_nothing(
    web: Webserver, settings: Settings
) -> None:
    production = settings.environments["production"]
    before = (production.env_file.read_bytes(), find_releases(production), list_backups(production))
    form = {"ops": {"deploy_plan": {"config": {"tag": "v1.1.0"}}}}
    run_id = web.launch_partition("deploy_job", "production", form)
    assert web.wait(run_id) == "FAILURE"
    message = _failure(web.home, run_id)
    assert "refusing to downgrade production from v1.2.0 to v1.1.0:" in message and "allow_downgrade" in message
    # Allowing it takes a reason; an empty form says why nothing was offered.
    unexplained = web.launch_partition(
        "deploy_job", "production", {"ops": {"deploy_plan": {"config": {"tag": "v1.1.0", "allow_downgrade": True}}}}
    )
    empty = web.launch_partition("deploy_job", "production", {"ops": {"deploy_plan": {"config": {"tag": None}}}})
    assert web.wait(unexplained) == web.wait(empty) == "FAILURE"
    assert "--allow-downgrade needs --reason" in _failure(web.home, unexplained)
    assert "the launchpad offers none: nothing newer than v1.2.0, which production runs" in _failure(web.home, empty)
    assert (production.env_file.read_bytes(), find_releases(production), list_backups(production)) == before


def test_cli_runs_say_who_launched_them_and_carry_no_technical_chips(
    web: Webserver, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI on `./dev ui`'s instance: its queue is the production one, the CLI's run executes in-process.
    monkeypatch.setenv("DAGSTER_HOME", str(web.home))
    assert main(["stop", "--environment", "development", "--config", str(settings.path)]) == 0
    queue = web.query(_QUEUE)["instance"]["runQueueConfig"]
    assert queue["maxConcurrentRuns"] == 10 and "ultra_ops/environment" in queue["tagConcurrencyLimitsYaml"]
    (stop,) = web.job_runs("stop_job")
    assert stop["status"] == "SUCCESS"
    shown = {t["key"]: t["value"] for t in stop["tags"]}  # what the Runs list has of the run
    assert shown[tags.USER] == shown[tags.LAUNCHED_BY] == getpass.getuser()  # "Launched by"
    assert not any(key.startswith(".dagster/") for key in shown) and "ultra_ops/process" not in shown
    with DagsterInstance.from_config(str(web.home)) as instance:
        kept = instance.get_run_by_id(stop["runId"]).tags
    assert kept[tags.PROCESS] and kept[tags.DOMAIN] == "release"  # on the run, for ultra_ops to read
    # The checklist's observations belong to declared, described assets: no ghost in the catalog.
    nodes = web.query(_ASSET_NODES)["assetNodes"]
    checklists = {"/".join(n["assetKey"]["path"]): n["description"] for n in nodes if n["groupName"] == "release"}
    for env in ("development", "staging", "production"):
        assert "pre-release checklist" in checklists[f"checklist/{env}"]


_PARTITION_CONFIG = """
query ($r: RepositorySelector!, $ps: String!, $p: String!) {
  partitionSetOrError(repositorySelector: $r, partitionSetName: $ps) { ... on PartitionSet {
    partition(partitionName: $p) { runConfigOrError { ... on PartitionRunConfig { yaml } } } } } }"""

_DEFAULT_YAML = """
query ($s: PipelineSelector!) { runConfigSchemaOrError(selector: $s) { ... on RunConfigSchema { rootDefaultYaml } } }"""

_QUEUE = "query { instance { runQueueConfig { maxConcurrentRuns tagConcurrencyLimitsYaml } } }"

_ASSET_NODES = "query { assetNodes { assetKey { path } description groupName } }"
