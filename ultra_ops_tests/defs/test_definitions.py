"""The code location: loads without touching a service, has the named jobs, and validates."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from ultra_ops_tests.support.services import REPO


@pytest.mark.unit
def test_jobs_and_typed_launch_forms() -> None:
    from ultra_ops.definitions import defs

    for name in ("deploy_job", "verify_job", "rollback_job", "backup_job", "stop_job", "recover_job"):
        job = defs.resolve_job_def(name)
        # The environment is the partition: picked from a list, and tagged on the run at submission.
        assert job.partitions_def.get_partition_keys() == ["development", "staging", "production"]
        assert job.partitioned_config.get_tags_for_partition_key("staging")["ultra_ops/environment"] == "staging"
        assert job.tags["ultra_ops/operation"] == name.removesuffix("_job")
    schema = defs.resolve_job_def("deploy_job").run_config_schema.config_type
    plan = schema.fields["ops"].config_type.fields["deploy_plan"].config_type.fields["config"].config_type
    assert "environment" not in plan.fields
    assert {"tag", "skip_tests", "skip_build", "compose_file", "registry"} <= set(plan.fields)
    # Nothing in the form is required: "Scaffold missing config" cannot write an invalid value.
    assert not any(f.is_required for f in plan.fields.values())


@pytest.mark.unit
def test_import_touches_no_service() -> None:
    # Point every service at closed ports: the import must still succeed, quickly.
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": "1", "ULTRA_OPS_CONFIG": "/nonexistent.toml"}
    proc = subprocess.run(
        [sys.executable, "-c", "import ultra_ops.definitions"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_dagster_definitions_validate(tmp_path) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run(
        [exe, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location ultra_ops" in proc.stderr + proc.stdout


@pytest.mark.unit
def test_production_instance_config_is_valid(tmp_path, monkeypatch) -> None:
    """dagster.yaml as the platform loads it: queued runs, one per environment, runs in containers."""
    import shutil

    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    # What docker-compose.yml gives the daemon: its storage and the networks runs join.
    for name in (
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
        "ULTRA_OPS_PLATFORM_NETWORK",
        "ULTRA_OPS_DEPLOY_NETWORK",
    ):
        monkeypatch.setenv(name, "x")
    config, _ = dagster_instance_config(str(tmp_path))
    for key in ("run_coordinator", "run_launcher", "storage"):
        section = (
            config[key]
            if key != "storage"
            else {
                "module": "dagster_postgres",
                "class": "DagsterPostgresStorage",
                "config": config["storage"]["postgres"],
            }
        )
        # Dagster maps the documented dagster.core.* module paths to dagster._core.* when it loads them.
        klass = class_from_code_pointer(section["module"].replace("dagster.core.", "dagster._core."), section["class"])
        result = process_config(klass.config_type(), section["config"])
        assert result.success, (key, [e.message for e in result.errors])
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits == [{"key": "ultra_ops/environment", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    assert config["run_launcher"]["class"] == "DockerRunLauncher"


@pytest.mark.unit
def test_platform_compose_file_resolves(tmp_path) -> None:
    import shutil as _shutil

    import pytest

    if _shutil.which("docker-compose") is None:
        pytest.skip("Debian's docker-compose is not installed (.ci/run installs it)")
    # The daemon hands the environments' passwords to the runs (dagster.yaml's env_vars): required.
    passwords = ("ULTRA_PROD_DB_PASSWORD", "ULTRA_PROD_REDIS_PASSWORD", "ULTRA_STAGING_DB_PASSWORD")
    passwords += ("ULTRA_STAGING_REDIS_PASSWORD",)
    env = {**os.environ, "DAGSTER_PG_PASSWORD": "not-a-real-password", **dict.fromkeys(passwords, "not-real")}

    def config(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-f", "docker-compose.yml", "config"]
        return subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=60)

    missing = config({k: v for k, v in env.items() if k != "ULTRA_PROD_DB_PASSWORD"})
    assert missing.returncode != 0 and "set ULTRA_PROD_DB_PASSWORD" in missing.stderr, missing.stderr
    proc = config(env)
    assert proc.returncode == 0, proc.stderr
    for service in ("dagster-postgres", "ultra-ops-code", "dagster-webserver", "dagster-daemon"):
        assert f"  {service}:" in proc.stdout
    assert "code-server" in proc.stdout and "DockerRunLauncher" not in proc.stdout
    _docker_api_is_proxied(yaml.safe_load(proc.stdout))


def _docker_api_is_proxied(compose: dict) -> None:
    """Only the socket proxies mount the Docker socket (read-only); the daemon reaches the launcher's
    proxy, the webserver no Docker API at all, and the run containers the deploy proxy."""
    services = compose["services"]
    for name, service in services.items():
        mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service.get("volumes", [])]
        socket = [m for m in mounts if "docker.sock" in m]
        if name.startswith("docker-api-"):
            assert socket == ["/var/run/docker.sock:/var/run/docker.sock:ro"], (name, socket)
            env = {k: str(v) for k, v in service["environment"].items()}
            assert env["EXEC"] == "0" and env["SWARM"] == "0" and env["SYSTEM"] == "0", name
            (network,) = service["networks"]
            assert compose["networks"][network]["internal"] is True
        else:
            assert not socket, (name, socket)
    assert services["dagster-daemon"]["environment"]["DOCKER_HOST"] == "tcp://docker-api-launcher:2375"
    assert "docker_launcher" in services["dagster-daemon"]["networks"]
    web = services["dagster-webserver"]
    assert "DOCKER_HOST" not in web["environment"] and set(web["networks"]) == {"ultra_ops_platform"}
    launcher = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_launcher"]["config"]
    assert "DOCKER_HOST=tcp://docker-api-deploy:2375" in launcher["env_vars"]
    # Runs join the deploy network by the name the daemon is given, the one compose created.
    assert {"env": "ULTRA_OPS_DEPLOY_NETWORK"} in launcher["networks"]
    daemon_env = services["dagster-daemon"]["environment"]
    assert daemon_env["ULTRA_OPS_DEPLOY_NETWORK"] == compose["networks"]["docker_deploy"]["name"]
    assert not any("docker.sock" in v for v in launcher["container_kwargs"]["volumes"])
