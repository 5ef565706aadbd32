"""The release pipeline end to end: `ultra-ops` commands running the Dagster jobs against a local
instance, a real sample service, PostgreSQL and Redis.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, RunsFilter

from ultra_ops.cli import main
from ultra_ops.defs.shared.tags import SKIP_TESTS
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.clock import local_time, utc_timestamp
from ultra_ops.engine.locks import EnvironmentLock, lock_holder
from ultra_ops.engine.release.records import ReleaseStatus, find_releases, last_release
from ultra_ops.engine.release.rollback import choose_backup
from ultra_ops_tests.support.cli import start_cli
from ultra_ops_tests.support.repos import git as _git
from ultra_ops_tests.support.stack import Stack

# v1.1.0 ships a migration that renames the table the API reads: the service starts and answers
# /health, but /api/v1/prompts fails, so only the verification catches it.
BREAKING_MIGRATION = """
INSERT INTO prompts (title) VALUES ('written by v1.1.0');
ALTER TABLE prompts RENAME TO prompts_v2;
CREATE TABLE only_in_v110 (id int);
"""


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
    # The newest backup is the safety copy of the failed release; a default rollback skips it.
    newest = list_backups(stack.env)[0]
    assert newest.label.startswith("safety before restore of")
    assert choose_backup(stack.env).label == "pre-deploy v1.1.0"

    assert [r.status for r in find_releases(stack.env)] == ["rolled_back", "deployed"]
    runs = _runs(dagster_home)
    by_job = {(r.job_name, r.tags.get("ultra_ops/version")): r for r in runs}
    assert by_job[("deploy_job", "v1.1.0")].status.value == "FAILURE"
    assert by_job[("deploy_job", "v1.0.0")].status.value == "SUCCESS"
    assert all(r.tags.get("ultra_ops/environment") == "staging" for r in runs)


def _json_tail(capsys) -> str:
    out = capsys.readouterr().out
    return out[out.index("{") : out.rindex("}") + 1]


def test_rollback_to_named_backup(tmp_path: Path, pg_database: str, dagster_home: Path, capsys) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "release",
        ],
        check=True,
    )
    stack = Stack(tmp_path, pg_database, extra=f'git_repo = "{repo}"\ntag_releases = true')
    try:
        _rollback_to_named_backup(stack, repo, dagster_home)
    finally:
        stack.stop()


def _rollback_to_named_backup(stack: Stack, repo: Path, dagster_home: Path) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    tags = subprocess.run(["git", "-C", str(repo), "tag", "-n1"], capture_output=True, text=True).stdout
    assert "v1.0.0" in tags and "Release v1.0.0" in tags
    (run,) = _runs(dagster_home)
    assert run.tags[SKIP_TESTS] == "true"  # kept on the run, out of the UI's chips
    assert last_release(stack.env).run_id == run.run_id
    assert stack.ops("deploy", "--tag", "v1.2.0") == 0
    assert stack.get("/health").json()["version"] == "v1.2.0"
    backups = list_backups(stack.env)
    first = next(b for b in backups if b.label == "pre-deploy v1.2.0")
    assert first.version == "v1.0.0"
    assert stack.ops("rollback", "--backup", first.id) == 0
    assert stack.get("/health").json()["version"] == "v1.0.0"
    restored = last_release(stack.env)
    assert (restored.operation, restored.status) == ("rollback", "rolled_back")
    assert (restored.version, restored.previous_version, restored.backup_id) == ("v1.0.0", "v1.2.0", first.id)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert restored.commit == head.strip()
    # The state before the rollback was kept as a safety backup.
    assert any(b.label.startswith("safety before restore") for b in list_backups(stack.env))


def test_release_records_of_deploys_and_rollbacks(tmp_path: Path, pg_database: str, dagster_home: Path, capsys) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    stack = Stack(tmp_path, pg_database, extra=f'git_repo = "{repo}"\ntag_releases = true')
    try:
        _release_records(stack, repo, dagster_home, capsys)
    finally:
        stack.stop()


def _release_records(stack: Stack, repo: Path, dagster_home: Path, capsys) -> None:
    commits = {}
    for tag in ("v1.0.0", "v1.0.1"):
        _git(repo, "commit", "-q", "--allow-empty", "-m", tag)
        commits[tag] = _git(repo, "rev-parse", "HEAD")
        assert stack.ops("deploy", "--tag", tag) == 0
    _git(repo, "commit", "-q", "--allow-empty", "-m", "v1.1.0")
    (stack.migrations / "0002_rename_prompts.sql").write_text(BREAKING_MIGRATION)
    assert stack.ops("deploy", "--tag", "v1.1.0") == 1  # verification fails, rolled back to v1.0.1
    target = next(b for b in list_backups(stack.env) if b.label == "pre-deploy v1.0.1")
    assert stack.ops("rollback", "--backup", target.id) == 0
    assert stack.get("/health").json()["version"] == "v1.0.0"

    rollback, failed, second, first = find_releases(stack.env)
    assert [(r.operation, r.version, r.previous_version, r.status) for r in (first, second, failed, rollback)] == [
        ("deploy", "v1.0.0", None, ReleaseStatus.DEPLOYED),
        ("deploy", "v1.0.1", "v1.0.0", ReleaseStatus.DEPLOYED),
        ("deploy", "v1.1.0", "v1.0.1", ReleaseStatus.ROLLED_BACK),  # what was attempted, over what ran
        ("rollback", "v1.0.0", "v1.0.1", ReleaseStatus.ROLLED_BACK),  # what was restored, over what ran
    ]
    assert "verification of v1.1.0 on staging failed" in failed.reason and "rolled back to backup" in failed.reason
    assert first.reason is None and second.reason is None and rollback.reason is None
    # Commits of the release tags where they exist: v1.1.0 was never tagged.
    assert (first.commit, second.commit, failed.commit) == (commits["v1.0.0"], commits["v1.0.1"], None)
    assert rollback.commit == commits["v1.0.0"]
    assert second.backup_id == next(b.id for b in list_backups(stack.env) if b.label == "pre-deploy v1.0.1")
    assert failed.backup_id == next(b.id for b in list_backups(stack.env) if b.label == "pre-deploy v1.1.0")
    assert rollback.backup_id == target.id

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = {r.run_id: r for r in instance.get_runs()}
        starts = {run_id: instance.get_run_record_by_id(run_id).start_time for run_id in runs}
    assert len(runs) == 4
    for record, job in (
        (first, "deploy_job"),
        (second, "deploy_job"),
        (failed, "deploy_job"),
        (rollback, "rollback_job"),
    ):
        run = runs[record.run_id]
        assert run.job_name == job and run.tags["ultra_ops/launched_by"] == getpass.getuser()
        assert record.launched_by == getpass.getuser() and record.environment == "staging"
        assert record.started_at == utc_timestamp(starts[record.run_id])  # the run's own start
        assert record.started_at <= record.ended_at
    assert runs[failed.run_id].status.value == "FAILURE" and runs[rollback.run_id].status.value == "SUCCESS"
    assert first.ended_at <= second.started_at <= second.ended_at <= failed.started_at

    capsys.readouterr()
    assert stack.ops("releases", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [r.to_dict() for r in (rollback, failed, second, first)]
    assert listed[1]["status"] == "rolled_back" and listed[1]["previous_version"] == "v1.0.1"
    # What an operator reads is in the config's time zone, named; the records (and the JSON) stay UTC.
    stack.config.write_text(stack.config.read_text().replace('timezone = "UTC"', 'timezone = "Asia/Kolkata"', 1))
    assert stack.ops("releases") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["STARTED", "OPERATION", "VERSION", "PREVIOUS", "STATUS"]
    assert [line[:29].strip() for line in table[1:]] == [
        local_time(r.started_at, "Asia/Kolkata") for r in (rollback, failed, second, first)
    ]
    assert all(line[20:29].strip() == "IST" for line in table[1:])
    assert [line[30:].split()[:4] for line in table[1:]] == [
        ["rollback", "v1.0.0", "v1.0.1", "rolled_back"],
        ["deploy", "v1.1.0", "v1.0.1", "rolled_back"],
        ["deploy", "v1.0.1", "v1.0.0", "deployed"],
        ["deploy", "v1.0.0", "-", "deployed"],
    ]
    assert rollback.run_id[:8] in table[1] and getpass.getuser() in table[1]
    assert stack.ops("status") == 0
    ended = local_time(rollback.ended_at, "Asia/Kolkata")
    assert ended.endswith(" IST") and ended[:16] != rollback.ended_at.replace("T", " ")[:16]  # 05:30 ahead
    assert f"last release rollback v1.0.0 rolled_back at {ended} " in capsys.readouterr().out


def test_failed_rollbacks_are_recorded_as_rollback_failed(
    tmp_path: Path, pg_database: str, dagster_home: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from ultra_ops_tests.support.peers import MODELS, HttpPeer

    # The provider revokes the key while the second deploy runs: the pre-release checklist's look at
    # it still passes, then every verification fails, a rollback's too.
    grace = {"sk-test-revoked-key": 1}

    def models(headers: dict[str, str]) -> tuple[int, object, float]:
        key = headers.get("Authorization", "").removeprefix("Bearer ")
        if key == "sk-test-good-key" or grace.get(key, 0) > 0:
            grace[key] = grace.get(key, 0) - 1
            return 200, MODELS, 0.0
        return 401, {"error": f"bad key {key}"}, 0.0

    monkeypatch.setenv("ULTRA_TEST_LLM_KEY", "sk-test-good-key")
    with HttpPeer({"/v1/models": models}) as llm:
        stack = Stack(
            tmp_path,
            pg_database,
            extra=f"""
        [[environments.staging.llm_providers]]
        name = "openai"
        models_url = "{llm.url("/v1/models")}"
        api_key_env = "ULTRA_TEST_LLM_KEY"
        """,
        )
        try:
            assert stack.ops("deploy", "--tag", "v1.0.0") == 0
            monkeypatch.setenv("ULTRA_TEST_LLM_KEY", "sk-test-revoked-key")
            assert stack.ops("deploy", "--tag", "v1.0.1") == 1
            assert "ALSO failed" in capsys.readouterr().err
            target = next(b for b in list_backups(stack.env) if b.label == "pre-deploy v1.0.1")
            assert stack.ops("rollback", "--backup", target.id) == 1
        finally:
            stack.stop()
    manual, deploy, first = find_releases(stack.env)
    assert (first.status, deploy.status, manual.status) == ("deployed", "rollback_failed", "rollback_failed")
    assert (deploy.operation, deploy.version, deploy.previous_version) == ("deploy", "v1.0.1", "v1.0.0")
    assert "verification of v1.0.1 on staging failed" in deploy.reason and "ALSO failed" in deploy.reason
    assert (manual.operation, manual.version, manual.previous_version) == ("rollback", "v1.0.0", "v1.0.0")
    assert manual.backup_id == target.id and "but verification failed" in manual.reason
    assert "key rejected" in manual.reason
    assert all("sk-test-revoked-key" not in r.reason for r in (deploy, manual))  # reasons are redacted
    runs = {r.run_id: r for r in _runs(dagster_home)}
    assert runs[deploy.run_id].job_name == "deploy_job" and runs[manual.run_id].job_name == "rollback_job"
    assert runs[manual.run_id].status.value == "FAILURE"


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
    refused = last_release(stack.env)
    assert (refused.operation, refused.status, refused.backup_id) == ("rollback", "failed", target.id)
    assert (refused.version, refused.previous_version) == ("v1.0.0", "v1.0.1") and "checksum" in refused.reason


def test_failed_checklist_blocks_the_deploy(stack: Stack, dagster_home: Path, capsys) -> None:
    stack.env.env_file.chmod(0o644)
    assert stack.ops("deploy", "--tag", "v1.0.0") == 1
    err = capsys.readouterr().err
    assert "pre-release checklist failed" in err and "wider than 0600" in err
    assert list_backups(stack.env) == []
    (record,) = find_releases(stack.env)
    (run,) = _runs(dagster_home)
    assert (record.operation, record.version, record.previous_version, record.status) == (
        "deploy",
        "v1.0.0",
        None,
        ReleaseStatus.FAILED,
    )
    assert "pre-release checklist failed" in record.reason and "wider than 0600" in record.reason
    assert record.run_id == run.run_id and record.backup_id is None
    assert record.started_at <= record.ended_at


def test_second_deploy_is_refused_while_the_lock_is_held(stack: Stack, capsys) -> None:
    with EnvironmentLock(stack.env, operation="deploy v9.9.9", run_id="run-holding-the-lock"):
        assert stack.ops("deploy", "--tag", "v1.0.0") == 1
    err = capsys.readouterr().err
    assert "run-holding-the-lock" in err and "locked" in err
    assert list_backups(stack.env) == []
    assert find_releases(stack.env) == []  # refused before it held the lock: not a release
    # Released with the holder: the next deploy goes through.
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0


def test_concurrent_deploy_is_refused_naming_the_running_one(
    tmp_path: Path, pg_database: str, dagster_home: Path, capsys
) -> None:
    """A deploy started from another process holds the lock for its whole run (its tests take 4 s)."""
    stack = Stack(
        tmp_path, pg_database, extra=f'test_command = ["{sys.executable}", "-c", "import time; time.sleep(4)"]'
    )
    try:
        _concurrent_deploy(stack, capsys)
    finally:
        stack.stop()


def _concurrent_deploy(stack: Stack, capsys) -> None:
    first = start_cli("deploy", "--tag", "v1.0.0", environment="staging", config=stack.config)
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


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "--tag", "1.2.3"],
        ["deploy", "--tag", "v1.2"],
        ["deploy", "--tag", ""],
        ["deploy", "--tag", "v1.2.3;rm -rf /"],
        ["deploy", "--tag", "v1.2.3\n"],
        ["deploy", "--tag", "v1.0.0", "--registry", "reg.example.com\n"],
        ["deploy", "--tag", "v1.2.3" + "9" * 300],
        ["deploy", "--tag", "v1.0.0", "--registry", "reg.example.com/$(id)"],
        ["deploy", "--tag", "v1.0.0", "--compose", "/nonexistent/compose.yml"],
        ["rollback", "--backup", "../x"],
        ["rollback", "--backup", "a;rm -rf /"],
        ["rollback", "--backup", ""],
        ["rollback", "--backup", "20260101T000000Z-ab12\n"],
        ["rollback", "--backup", "b" * 300],
        ["rollback", "--backup", "20990101T000000Z-dead"],
    ],
)
def test_bad_input_exits_2_and_writes_nothing(stack: Stack, dagster_home: Path, argv, capsys) -> None:
    assert stack.ops(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not stack.env.backups_path.exists() or not any(stack.env.backups_path.iterdir())
    assert not any(dagster_home.iterdir())  # no run was started


@pytest.mark.parametrize("argv", [["status"], ["deploy", "--tag", "v1.0.0"], ["backups", "create"]])
def test_env_file_not_utf8_exits_2_naming_file_and_line(stack: Stack, dagster_home: Path, argv, capsys) -> None:
    stack.env.env_file.write_bytes("ULTRA_VERSION=\n# caf\u00e9 settings\nULTRA_X=1\n".encode("latin-1"))
    assert stack.ops(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(stack.env.env_file) in err and "line 2" in err and "UTF-8" in err
    assert not any(dagster_home.iterdir())  # no run was started
    assert not stack.env.backups_path.exists() or not any(stack.env.backups_path.iterdir())
    stack.env.env_file.write_text("ULTRA_VERSION=\n")  # readable again for the fixture's teardown


def test_unknown_environment_exits_2(stack: Stack, dagster_home: Path, capsys) -> None:
    assert main(["deploy", "--environment", "prod;ls", "--tag", "v1.0.0", "--config", str(stack.config)]) == 2
    assert "environment" in capsys.readouterr().err
    assert main(["verify", "--environment", "production", "--config", str(stack.config)]) == 2
    assert not any(dagster_home.iterdir())


def test_secrets_never_reach_logs_metadata_or_output(
    tmp_path: Path, pg_database: str, dagster_home: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from ultra_ops_tests.support.peers import LlmServer

    secret_key = "sk-test-Zq8wVv3yTopSecretValue"
    db_secret = "pg-pass-Hx7uNeverPrintMe"
    monkeypatch.setenv("ULTRA_TEST_LLM_KEY", secret_key)
    # As a variable exported from a CRLF file: the carriage return is part of the value.
    monkeypatch.setenv("ULTRA_TEST_DB_PASSWORD", db_secret + "\r")
    with LlmServer(expected_key=secret_key) as llm:
        # password_env is named after the [database] table is written, so append it to that table.
        s = Stack(
            tmp_path,
            pg_database,
            extra=f"""
        [[environments.staging.llm_providers]]
        name = "openai"
        models_url = "{llm.url}"
        api_key_env = "ULTRA_TEST_LLM_KEY"
        """,
        )
        text = s.config.read_text().replace(
            f'name = "{pg_database}"', f'name = "{pg_database}"\npassword_env = "ULTRA_TEST_DB_PASSWORD"'
        )
        s.config.write_text(text)
        s.env.env_file.write_bytes(f"ULTRA_VERSION=\r\nAPP_SECRET_TOKEN={db_secret}\r\n".encode())
        try:
            assert s.ops("deploy", "--tag", "v1.0.0") == 0
            assert s.ops("verify", "--json") == 0
            monkeypatch.setenv("ULTRA_TEST_LLM_KEY", secret_key + "-wrong")
            assert s.ops("verify") == 1
            # A key ending in CR LF: a failed check naming the variable (httpx would refuse the header
            # and quote it, escaped, in its error text).
            monkeypatch.setenv("ULTRA_TEST_LLM_KEY", secret_key + "\r\n")
            assert s.ops("verify", "--json") == 1
        finally:
            s.stop()
    captured = capsys.readouterr()
    seen = captured.out + captured.err
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = list(instance.get_runs(RunsFilter()))
        assert len(runs) == 4
        for run in runs:
            seen += repr(run.tags) + repr(run.run_config)
            for entry in instance.all_logs(run.run_id):
                seen += entry.user_message + repr(entry.dagster_event)
    for backup in list_backups(s.env):
        seen += (backup.path / "manifest.json").read_text()
    seen += "".join(p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*") if p.is_file())
    # The failing verifies were recorded...
    assert "key rejected" in seen and "ULTRA_TEST_LLM_KEY has white space" in seen
    assert secret_key not in seen and db_secret not in seen  # ...without the secrets, in any form


def test_jobs_launched_through_graphql_like_the_ui(stack: Stack, dagster_home: Path, tmp_path: Path) -> None:
    from ultra_ops_tests.support.webserver import Webserver

    with Webserver(dagster_home, env={"ULTRA_OPS_CONFIG": str(stack.config)}) as web:
        # The launchpad picks the environment as a partition; its tags are on the run from the start.
        assert web.partition_tags("deploy_job", "staging")["ultra_ops/environment"] == "staging"
        run_id = web.launch_partition("deploy_job", "staging", {"ops": {"deploy_plan": {"config": {"tag": "v1.0.0"}}}})
        assert web.wait(run_id) == "SUCCESS"
        assert stack.get("/health").json()["version"] == "v1.0.0"
        record = last_release(stack.env)
        assert (record.run_id, record.launched_by, record.status) == (run_id, "ui", "deployed")
        run_id = web.launch_partition("verify_job", "staging")
        assert web.wait(run_id) == "SUCCESS"
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            run = instance.get_run_by_id(run_id)
            assert run.tags["ultra_ops/environment"] == "staging"
            assert run.tags["ultra_ops/version"] == "v1.0.0"  # added by the op: the deployed version
        # A bad tag typed into the launch form fails the run at its first step, saying why.
        run_id = web.launch_partition("deploy_job", "staging", {"ops": {"deploy_plan": {"config": {"tag": "latest"}}}})
        assert web.wait(run_id) == "FAILURE"
        # So does an empty one outside development.
        empty = web.launch_partition("deploy_job", "staging", {"ops": {"deploy_plan": {"config": {"tag": ""}}}})
        assert web.wait(empty) == "FAILURE"
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            messages = [
                " ".join(
                    e.dagster_event.step_failure_data.user_failure_data.description
                    for e in instance.all_logs(r)
                    if e.dagster_event and e.dagster_event.is_step_failure
                )
                for r in (run_id, empty)
            ]
        assert "release tag 'latest' is not v + a semantic version" in messages[0]
        assert "a release tag is required for staging deploys" in messages[1]
        assert stack.get("/health").json()["version"] == "v1.0.0"


def test_cli_runs_are_recorded_under_their_job(stack: Stack, dagster_home: Path) -> None:
    """What the UI shows of runs started from the shell: under their job in the ultra_ops code
    location, re-executable through the same API the UI's Re-execute button uses."""
    from ultra_ops_tests.support.webserver import Webserver

    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    assert stack.ops("verify") == 0
    assert stack.ops("deploy", "--tag", "v1.0.1") == 0
    assert stack.ops("rollback", "--yes") == 0
    cli_runs = {r.job_name: r for r in _runs(dagster_home)}
    with Webserver(dagster_home, env={"ULTRA_OPS_CONFIG": str(stack.config)}) as web:
        for job, count in (("deploy_job", 2), ("verify_job", 1), ("rollback_job", 1)):
            runs = web.job_runs(job)
            assert len(runs) == count, (job, runs)
            tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
            assert tags["dagster/code_location"] == "ultra_ops"
            assert tags["ultra_ops/environment"] == "staging" and tags["dagster/partition"] == "staging"
            assert tags["ultra_ops/launched_by"]
        rerun = web.reexecute(cli_runs["verify_job"].run_id, "ALL_STEPS")
        assert web.wait(rerun) == "SUCCESS"
        assert rerun in {r["runId"] for r in web.job_runs("verify_job")}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_run_by_id(rerun)
        assert run.parent_run_id == cli_runs["verify_job"].run_id
        assert run.tags["ultra_ops/environment"] == "staging"


def test_failed_verify_still_prints_its_json(stack: Stack, capsys) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    stack.stop()
    capsys.readouterr()
    assert stack.ops("verify", "--json") == 1
    report = json.loads(_json_tail(capsys))
    assert report["ok"] is False and report["environment"] == "staging"
    assert any(not r["ok"] for r in report["results"])


def test_a_killed_cli_run_is_marked_failed_by_the_next_one(
    tmp_path: Path, pg_database: str, dagster_home: Path
) -> None:
    import os
    import signal

    stack = Stack(
        tmp_path, pg_database, extra=f'test_command = ["{sys.executable}", "-c", "import time; time.sleep(60)"]'
    )
    deploy = start_cli(
        "deploy",
        "--tag",
        "v1.0.0",
        environment="staging",
        config=stack.config,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (lock_holder(stack.env) or {}).get("run_id"):
            assert time.monotonic() < deadline and deploy.poll() is None
            time.sleep(0.02)
        run_id = lock_holder(stack.env)["run_id"]
        os.kill(deploy.pid, signal.SIGKILL)
        deploy.wait()
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            assert instance.get_run_by_id(run_id).status.value == "STARTED"  # nobody else would end it
        assert stack.ops("backups", "create") == 0  # the next CLI run; the kernel freed the lock
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            run = instance.get_run_by_id(run_id)
            assert run.status.value == "FAILURE"
            messages = " ".join(e.message or "" for e in instance.all_logs(run_id))
            assert f"pid {deploy.pid}" in messages and "killed?" in messages
    finally:
        if deploy.poll() is None:
            deploy.kill()
        stack.stop()
