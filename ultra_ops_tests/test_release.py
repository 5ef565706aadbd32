"""The release pipeline end to end: `ultra-ops` commands running the Dagster jobs against a local
instance, a real sample service, PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import PG, SAMPLE_MIGRATIONS, free_port, write_config
from dagster import DagsterInstance, RunsFilter

from ultra_ops.cli import main
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.locks import EnvironmentLock, lock_holder
from ultra_ops.engine.release.records import release_history
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import load_settings

# v1.1.0 ships a migration that renames the table the API reads: the service starts and answers
# /health, but /api/v1/prompts fails, so only the verification catches it.
BREAKING_MIGRATION = """
INSERT INTO prompts (title) VALUES ('written by v1.1.0');
ALTER TABLE prompts RENAME TO prompts_v2;
CREATE TABLE only_in_v110 (id int);
"""


class Stack:
    """One test's environment: config, folders, database and the sample service's port."""

    def __init__(self, tmp_path: Path, database: str, *, extra: str = "", verify_extra: str = "") -> None:
        self.tmp = tmp_path
        self.database = database
        self.port = free_port()
        self.migrations = tmp_path / "migrations"
        shutil.copytree(SAMPLE_MIGRATIONS, self.migrations)
        api = f"http://127.0.0.1:{self.port}/api/v1/prompts"
        verify_extra = f'endpoints = [{{ name = "prompts", url = "{api}", expect_status = 200 }}]\n' + verify_extra
        self.config = write_config(tmp_path, database, port=self.port, migrations=self.migrations,
                                   extra=extra, verify_extra=verify_extra)
        self.env = load_settings(self.config).environment("staging")
        self.env.env_file.write_text("ULTRA_FEATURE_FLAGS=search\nULTRA_VERSION=\n")
        self.env.env_file.chmod(0o600)

    def ops(self, *argv: str) -> int:
        return main([*argv, "--environment", "staging", "--config", str(self.config)])

    def rows(self) -> list[tuple]:
        with psycopg.connect(**PG, dbname=self.database) as conn:
            return conn.execute("SELECT id, title FROM prompts ORDER BY id").fetchall()

    def tables(self) -> set[str]:
        with psycopg.connect(**PG, dbname=self.database) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        return {r[0] for r in rows}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def stop(self) -> None:
        get_runtime(self.env).down()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def stack(tmp_path: Path, pg_database: str, dagster_home: Path):
    s = Stack(tmp_path, pg_database)
    yield s
    s.stop()


def _runs(home: Path) -> list:
    with DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs())


def test_deploy_verify_then_failed_release_rolls_back_exactly(stack: Stack, dagster_home: Path, capsys) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    assert stack.get("/health").json()["version"] == "v1.0.0"
    rows_v100 = stack.rows()
    env_file_v100 = stack.env.env_file.read_bytes()
    assert b"ULTRA_VERSION=v1.0.0" in env_file_v100
    assert stack.ops("verify", "--json") == 0
    report = json.loads(_json_tail(capsys))
    assert report["environment"] == "staging"

    (stack.migrations / "0002_rename_prompts.sql").write_text(BREAKING_MIGRATION)
    assert stack.ops("deploy", "--tag", "v1.1.0") == 1
    err = capsys.readouterr().err
    assert "verification of v1.1.0 on staging failed" in err
    assert "rolled back to backup" in err

    assert stack.rows() == rows_v100
    assert "only_in_v110" not in stack.tables() and "prompts_v2" not in stack.tables()
    assert stack.env.env_file.read_bytes() == env_file_v100
    assert stack.get("/health").json()["version"] == "v1.0.0"
    assert stack.get("/api/v1/prompts").status_code == 200

    statuses = [r.status for r in release_history(stack.env)]
    assert statuses == ["deployed", "rolled_back"]
    runs = _runs(dagster_home)
    by_job = {(r.job_name, r.tags.get("ultra_ops/version")): r for r in runs}
    assert by_job[("deploy_job", "v1.1.0")].status.value == "FAILURE"
    assert by_job[("deploy_job", "v1.0.0")].status.value == "SUCCESS"
    assert all(r.tags.get("ultra_ops/environment") == "staging" for r in runs)


def _json_tail(capsys) -> str:
    out = capsys.readouterr().out
    return out[out.index("{"):out.rindex("}") + 1]


def test_rollback_to_named_backup(tmp_path: Path, pg_database: str, dagster_home: Path, capsys) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "release"], check=True)
    stack = Stack(tmp_path, pg_database, extra=f'git_repo = "{repo}"')
    try:
        _rollback_to_named_backup(stack, repo, dagster_home)
    finally:
        stack.stop()


def _rollback_to_named_backup(stack: Stack, repo: Path, dagster_home: Path) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    tags = subprocess.run(["git", "-C", str(repo), "tag", "-n1"], capture_output=True, text=True).stdout
    assert "v1.0.0" in tags and "Release v1.0.0" in tags
    (run,) = _runs(dagster_home)
    assert run.tags["ultra_ops/skip_tests"] == "true"
    assert release_history(stack.env)[-1].skip_tests
    assert stack.ops("deploy", "--tag", "v1.2.0") == 0
    assert stack.get("/health").json()["version"] == "v1.2.0"
    backups = list_backups(stack.env)
    first = next(b for b in backups if b.label == "pre-deploy v1.2.0")
    assert first.version == "v1.0.0"
    assert stack.ops("rollback", "--backup", first.id) == 0
    assert stack.get("/health").json()["version"] == "v1.0.0"
    assert release_history(stack.env)[-1].status == "rolled_back"
    # The state before the rollback was kept as a safety backup.
    assert any(b.label.startswith("safety before restore") for b in list_backups(stack.env))


def test_rollback_without_backup_needs_confirmation(stack: Stack, capsys) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    assert stack.ops("deploy", "--tag", "v1.0.1") == 0
    capsys.readouterr()
    # No terminal and no --yes: refused as bad input, nothing runs.
    assert stack.ops("rollback") == 2
    captured = capsys.readouterr()
    assert "--yes" in captured.err
    assert "pre-deploy v1.0.1" in captured.out  # the list of backups was shown
    assert stack.get("/health").json()["version"] == "v1.0.1"
    assert stack.ops("rollback", "--yes") == 0
    assert stack.get("/health").json()["version"] == "v1.0.0"
    capsys.readouterr()
    assert stack.ops("status") == 0
    out = capsys.readouterr().out
    assert "version      v1.0.0" in out and "rolled_back" in out and "running" in out
    assert stack.ops("stop") == 0
    with pytest.raises(httpx.ConnectError):
        stack.get("/health")


def test_corrupted_backup_is_refused_before_anything_changes(stack: Stack, capsys) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    assert stack.ops("deploy", "--tag", "v1.0.1") == 0
    target = next(b for b in list_backups(stack.env) if b.label == "pre-deploy v1.0.1")
    dump = next(p for p in sorted(target.path.rglob("*")) if p.is_file() and p.name not in ("manifest.json",))
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    before = (stack.rows(), stack.env.env_file.read_bytes(), len(list_backups(stack.env)))
    assert stack.ops("rollback", "--backup", target.id) == 1
    assert "checksum" in capsys.readouterr().err.lower()
    assert (stack.rows(), stack.env.env_file.read_bytes(), len(list_backups(stack.env))) == before
    assert stack.get("/health").json()["version"] == "v1.0.1"


def test_failed_checklist_blocks_the_deploy(stack: Stack, capsys) -> None:
    stack.env.env_file.chmod(0o644)
    assert stack.ops("deploy", "--tag", "v1.0.0") == 1
    err = capsys.readouterr().err
    assert "pre-release checklist failed" in err and "wider than 0600" in err
    assert list_backups(stack.env) == []


def test_second_deploy_is_refused_while_the_lock_is_held(stack: Stack, capsys) -> None:
    with EnvironmentLock(stack.env, operation="deploy v9.9.9", run_id="run-holding-the-lock"):
        assert stack.ops("deploy", "--tag", "v1.0.0") == 1
    err = capsys.readouterr().err
    assert "run-holding-the-lock" in err and "locked" in err
    assert list_backups(stack.env) == []
    # Released with the holder: the next deploy goes through.
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0


def test_concurrent_deploy_is_refused_naming_the_running_one(
    tmp_path: Path, pg_database: str, dagster_home: Path, capsys
) -> None:
    """A deploy started from another process holds the lock for its whole run (its tests take 4 s)."""
    stack = Stack(tmp_path, pg_database,
                  extra=f'test_command = ["{sys.executable}", "-c", "import time; time.sleep(4)"]')
    try:
        _concurrent_deploy(stack, capsys)
    finally:
        stack.stop()


def _concurrent_deploy(stack: Stack, capsys) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "ultra_ops.cli", "deploy", "--environment", "staging", "--tag", "v1.0.0",
         "--config", str(stack.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holders = []
    deadline = time.monotonic() + 60
    while first.poll() is None and time.monotonic() < deadline and not holders:
        holder = lock_holder(stack.env)
        if holder and holder.get("run_id"):
            holders.append(holder)
        time.sleep(0.02)
    assert holders, "the first deploy never held the lock"
    assert stack.ops("deploy", "--tag", "v1.0.1", "--skip-tests") == 1
    err = capsys.readouterr().err
    assert holders[0]["run_id"] in err and "deploy v1.0.0" in err
    seen_during = set()
    while first.poll() is None:
        holder = lock_holder(stack.env)
        if holder:
            seen_during.add(holder.get("run_id"))
        time.sleep(0.05)
    assert first.returncode == 0, first.stderr.read()
    assert seen_during <= {holders[0]["run_id"]}  # nobody else got in while it ran
    assert lock_holder(stack.env) is None  # released when the run ended
    assert stack.get("/health").json()["version"] == "v1.0.0"


@pytest.mark.parametrize("argv", [
    ["deploy", "--tag", "1.2.3"],
    ["deploy", "--tag", "v1.2"],
    ["deploy", "--tag", ""],
    ["deploy", "--tag", "v1.2.3;rm -rf /"],
    ["deploy", "--tag", "v1.2.3" + "9" * 300],
    ["deploy", "--tag", "v1.0.0", "--registry", "reg.example.com/$(id)"],
    ["deploy", "--tag", "v1.0.0", "--compose", "/nonexistent/compose.yml"],
    ["rollback", "--backup", "../x"],
    ["rollback", "--backup", "a;rm -rf /"],
    ["rollback", "--backup", ""],
    ["rollback", "--backup", "b" * 300],
    ["rollback", "--backup", "20990101T000000Z-dead"],
])
def test_bad_input_exits_2_and_writes_nothing(stack: Stack, dagster_home: Path, argv, capsys) -> None:
    assert stack.ops(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not stack.env.backups_path.exists() or not any(stack.env.backups_path.iterdir())
    assert not any(dagster_home.iterdir())  # no run was started


def test_unknown_environment_exits_2(stack: Stack, dagster_home: Path, capsys) -> None:
    assert main(["deploy", "--environment", "prod;ls", "--tag", "v1.0.0", "--config", str(stack.config)]) == 2
    assert "environment" in capsys.readouterr().err
    assert main(["verify", "--environment", "production", "--config", str(stack.config)]) == 2
    assert not any(dagster_home.iterdir())


def test_secrets_never_reach_logs_metadata_or_output(
    tmp_path: Path, pg_database: str, dagster_home: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from peers import LlmServer

    secret_key = "sk-test-Zq8wVv3yTopSecretValue"
    db_secret = "pg-pass-Hx7uNeverPrintMe"
    monkeypatch.setenv("ULTRA_TEST_LLM_KEY", secret_key)
    monkeypatch.setenv("ULTRA_TEST_DB_PASSWORD", db_secret)
    with LlmServer(expected_key=secret_key) as llm:
        # password_env is named after the [database] table is written, so append it to that table.
        s = Stack(tmp_path, pg_database, extra=f"""
        [[environments.staging.llm_providers]]
        name = "openai"
        models_url = "{llm.url}"
        api_key_env = "ULTRA_TEST_LLM_KEY"
        """)
        text = s.config.read_text().replace(
            f'name = "{pg_database}"', f'name = "{pg_database}"\npassword_env = "ULTRA_TEST_DB_PASSWORD"')
        s.config.write_text(text)
        s.env.env_file.write_text(f"ULTRA_VERSION=\nAPP_SECRET_TOKEN={db_secret}\n")
        try:
            assert s.ops("deploy", "--tag", "v1.0.0") == 0
            assert s.ops("verify", "--json") == 0
            monkeypatch.setenv("ULTRA_TEST_LLM_KEY", secret_key + "-wrong")
            assert s.ops("verify") == 1
        finally:
            s.stop()
    captured = capsys.readouterr()
    seen = captured.out + captured.err
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = list(instance.get_runs(RunsFilter()))
        assert len(runs) == 3
        for run in runs:
            seen += repr(run.tags) + repr(run.run_config)
            for entry in instance.all_logs(run.run_id):
                seen += entry.user_message + repr(entry.dagster_event)
    for backup in list_backups(s.env):
        seen += (backup.path / "manifest.json").read_text()
    seen += "".join(p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert "key rejected" in seen  # the failing verify was recorded...
    assert secret_key not in seen and db_secret not in seen  # ...without the secrets


def test_jobs_launched_through_graphql_like_the_ui(stack: Stack, dagster_home: Path, tmp_path: Path) -> None:
    from webserver import Webserver

    with Webserver(dagster_home, env={"ULTRA_OPS_CONFIG": str(stack.config)}) as web:
        run_id = web.client.submit_job_execution(
            "deploy_job",
            run_config={"ops": {"deploy_plan": {"config": {"environment": "staging", "tag": "v1.0.0"}}}},
            tags={"ultra_ops/environment": "staging", "ultra_ops/version": "v1.0.0"},
        )
        assert web.wait(run_id) == "SUCCESS"
        assert stack.get("/health").json()["version"] == "v1.0.0"
        run_id = web.client.submit_job_execution(
            "verify_job", run_config={"ops": {"verify_checks": {"config": {"environment": "staging"}}}})
        assert web.wait(run_id) == "SUCCESS"
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            run = instance.get_run_by_id(run_id)
            # Tags the job adds itself, so UI launches carry them too.
            assert run.tags["ultra_ops/environment"] == "staging"
            assert run.tags["ultra_ops/version"] == "v1.0.0"
        # A bad tag typed into the launch form fails the run at its first step, saying why.
        run_id = web.client.submit_job_execution(
            "deploy_job", run_config={"ops": {"deploy_plan": {"config": {"environment": "staging",
                                                                          "tag": "latest"}}}})
        assert web.wait(run_id) == "FAILURE"
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            messages = " ".join(e.dagster_event.step_failure_data.user_failure_data.description
                                for e in instance.all_logs(run_id)
                                if e.dagster_event and e.dagster_event.is_step_failure)
        assert "release tag 'latest' is not v + a semantic version" in messages
        assert stack.get("/health").json()["version"] == "v1.0.0"
