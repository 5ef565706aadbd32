"""Past one host: deploy/k8s/dagster.yaml (Dagster's K8sRunLauncher) and the Helm chart's values,
validated as far as a machine without a cluster allows: the instance config passes Dagster's schema
with dagster-k8s installed (the `k8s` extra), loads on this machine's PostgreSQL, and the launcher
builds from it; the values say what the instance file says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ultra_ops.platform.instance import production_instance
from ultra_ops_tests.support.services import PG, REPO

K8S = REPO / "deploy" / "k8s"


def _k8s_instance() -> dict:
    return yaml.safe_load((K8S / "dagster.yaml").read_text())


@pytest.mark.unit
def test_k8s_instance_differs_from_production_only_in_the_run_launcher() -> None:
    production, k8s = production_instance(), _k8s_instance()
    assert k8s["run_launcher"]["class"] == "K8sRunLauncher"
    assert {k: v for k, v in k8s.items() if k != "run_launcher"} == {
        k: v for k, v in production.items() if k != "run_launcher"
    }


def test_k8s_instance_loads_with_dagster_k8s(tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (pip install -e .[k8s])")
    from dagster import DagsterInstance
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    (tmp_path / "dagster.yaml").write_text((K8S / "dagster.yaml").read_text())
    for name, value in (
        ("DAGSTER_PG_HOST", PG["host"]),
        ("DAGSTER_PG_USER", PG["user"]),
        ("DAGSTER_PG_PASSWORD", ""),
        ("DAGSTER_PG_DB", pg_database),
    ):
        monkeypatch.setenv(name, value)
    # The whole file against Dagster's instance schema, the launcher's section against K8sRunLauncher's.
    config, _ = dagster_instance_config(str(tmp_path))
    launcher_config = config["run_launcher"]["config"]
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.get_runs_count()  # the storage answers
        # Outside a cluster there is no in-cluster config: build the launcher from the same section
        # with a kubeconfig instead (read, never contacted).
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                    "users": [{"name": "u", "user": {"token": "not-a-token"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        checked = process_config(
            K8sRunLauncher.config_type(),
            {**launcher_config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)},
        )
        assert checked.success, [e.message for e in checked.errors]
        launcher = K8sRunLauncher(**checked.value)
        launcher.register_instance(instance)
        assert launcher.job_namespace == "ultra-ops"
        assert launcher.env_secrets == ["ultra-ops-secrets"]
        assert launcher.instance_config_map == "dagster-instance"


@pytest.mark.unit
def test_helm_values_match_the_instance() -> None:
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    instance = _k8s_instance()
    queue = values["dagsterDaemon"]["runCoordinator"]
    assert queue["enabled"] and queue["type"] == "QueuedRunCoordinator"
    mine = instance["run_coordinator"]["config"]
    assert queue["config"]["queuedRunCoordinator"] == {
        "maxConcurrentRuns": mine["max_concurrent_runs"],
        "tagConcurrencyLimits": mine["tag_concurrency_limits"],
    }
    assert values["retention"]["enabled"]
    assert values["retention"]["schedule"]["purgeAfterDays"] == instance["retention"]["schedule"]["purge_after_days"]
    assert values["retention"]["sensor"]["purgeAfterDays"] == instance["retention"]["sensor"]["purge_after_days"]
    pg = values["postgresql"]
    assert pg["enabled"] is False
    assert pg["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "ultra_ops.definitions"]
    assert deployment["image"]["repository"].endswith("/ultra_ops")
    (server,) = values["dagsterWebserver"]["workspace"]["servers"]
    assert server == {"host": deployment["name"], "port": deployment["port"], "name": "ultra_ops"}
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    mine = instance["run_launcher"]["config"]
    assert k8s["jobNamespace"] == mine["job_namespace"]
    assert [s["name"] for s in k8s["envSecrets"]] == mine["env_secrets"]
    assert [c["name"] for c in k8s["envConfigMaps"]] == mine["env_config_maps"]
    assert k8s["volumeMounts"] == mine["volume_mounts"] and k8s["volumes"] == mine["volumes"]
