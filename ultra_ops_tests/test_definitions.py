"""The code location: loads without touching a service, has the named jobs, and validates."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_jobs_and_typed_launch_forms() -> None:
    from ultra_ops.definitions import defs

    for name in ("deploy_job", "verify_job", "rollback_job", "backup_job"):
        assert defs.resolve_job_def(name).name == name
    schema = defs.resolve_job_def("deploy_job").run_config_schema.config_type
    plan = schema.fields["ops"].config_type.fields["deploy_plan"].config_type.fields["config"].config_type
    env_type = plan.fields["environment"].config_type
    assert env_type.kind.name == "ENUM"
    assert {v.config_value for v in env_type.enum_values} == {"development", "staging", "production"}
    assert {"tag", "skip_tests", "skip_build", "compose_file", "registry"} <= set(plan.fields)


def test_import_touches_no_service() -> None:
    # Point every service at closed ports: the import must still succeed, quickly.
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": "1", "ULTRA_OPS_CONFIG": "/nonexistent.toml"}
    proc = subprocess.run([sys.executable, "-c", "import ultra_ops.definitions"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_dagster_definitions_validate(tmp_path) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run([exe, "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location ultra_ops" in proc.stderr + proc.stdout
