"""Release branches and tags on git repositories made in the test, with a bare remote for the pushes."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import AssetKey, DagsterInstance

from ultra_ops.cli import main
from ultra_ops.engine.calendar.ticks import release_tick
from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.release.git_tags import commit_of, tag_release
from ultra_ops.engine.release.records import ReleaseRecord, ReleaseStatus, find_releases, record_release
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_multi_config
from ultra_ops_tests.support.repos import PACKAGE, git, make_repo


def with_repo(config: Path, repo: Path, push: bool = True) -> Path:
    settings = f'[defaults]\ngit_repo = "{repo}"\ngit_push = {str(push).lower()}\n'
    text = config.read_text().replace("[defaults]\n", settings, 1)
    config.write_text(text)
    return config


@pytest.mark.unit
def test_release_branch_from_main_with_its_version_then_tagged_in_production(
    tmp_path: Path, dagster_home: Path, capsys
) -> None:
    repo, remote = make_repo(tmp_path)
    config = with_repo(
        write_multi_config(tmp_path, {"staging": "unused_s", "production": "unused_p"}, redis_prefix="unused:"), repo
    )
    main_before = git(repo, "rev-parse", "main")
    (repo / "notes.txt").write_text("work in progress, not committed\n")  # the operator's working tree

    assert main(["release-branch", "--tag", "v1.1.0", "--config", str(config)]) == 0
    assert "release/v1.1.0 created" in capsys.readouterr().out
    branch = git(repo, "rev-parse", "release/v1.1.0")
    assert git(repo, "rev-parse", "release/v1.1.0^") == main_before == git(repo, "rev-parse", "main")
    package = json.loads(git(repo, "show", "release/v1.1.0:package.json"))
    assert package == {**PACKAGE, "version": "1.1.0"}  # the package's version only, nothing else touched
    assert "ULTRA_VERSION=v1.1.0\nULTRA_AUTH_USER=admin" in git(repo, "show", "release/v1.1.0:.env.example")
    assert git(repo, "show", "-s", "--format=%s|%cn", branch) == "Release v1.1.0|ultra-ops"
    # Nothing of the operator's checkout moved: HEAD, index and working tree are as they were.
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(repo, "status", "--porcelain") == "?? notes.txt"
    assert json.loads((repo / "package.json").read_text())["version"] == "1.0.0"
    assert git(remote, "rev-parse", "refs/heads/release/v1.1.0") == branch  # pushed

    # Bad input: exit 2, nothing made.
    capsys.readouterr()
    assert main(["release-branch", "--tag", "v1.1.0", "--config", str(config)]) == 2
    assert "release/v1.1.0 already exists" in capsys.readouterr().err
    assert main(["release-branch", "--tag", "1.2", "--config", str(config)]) == 2
    assert main(["release-branch", "--tag", "v1.2.0-rc.1", "--config", str(config)]) == 2
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/release/") == "refs/heads/release/v1.1.0"
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs()
    assert run.job_name == "release_branch_job" and run.status.value == "SUCCESS"
    assert run.tags["ultra_ops/version"] == "v1.1.0" and run.tags["dagster/code_location"] == "ultra_ops"

    settings = load_settings(config)
    staging, production = settings.environments["staging"], settings.environments["production"]
    # Before the tag, the release's commit is its branch's: a staging deploy's record keeps it.
    assert commit_of(staging, "v1.1.0") == branch
    assert tag_release(staging, "v1.1.0") == "skipped"  # staging does not tag (tag_releases: production)
    assert tag_release(production, "v1.1.0") == "created"
    assert git(repo, "rev-parse", "v1.1.0^{commit}") == branch  # the branch's commit, not HEAD (main)
    assert git(repo, "cat-file", "-t", "v1.1.0") == "tag"  # annotated
    assert git(repo, "tag", "-n1", "v1.1.0").split(None, 1)[1] == "Release v1.1.0"
    assert git(remote, "rev-parse", "v1.1.0^{commit}") == branch
    assert tag_release(production, "v1.1.0") == "exists"
    assert commit_of(production, "v1.1.0") == branch


@pytest.mark.unit
def test_staging_tick_deploys_the_newest_release_branch_it_has_not_had(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path)
    config = with_repo(
        write_multi_config(
            tmp_path, {"development": "u_d", "staging": "u_s", "production": "u_p"}, redis_prefix="unused:"
        ),
        repo,
        push=False,
    )
    settings = load_settings(config)
    tuesday = datetime(2027, 3, 9, 10, tzinfo=ZoneInfo("UTC"))
    tick = release_tick(settings, "staging", tuesday, check_lock=False)
    assert tick.version is None and "no release/vX.Y.Z branch" in tick.skip and "there is none" in tick.skip
    for version in ("v1.2.0", "v1.10.0", "v1.9.3"):
        assert main(["release-branch", "--tag", version, "--config", str(config)]) == 0
    git(repo, "branch", "release/v2.0.0-rc.1", "main")  # not a release version: never deployed by the calendar
    tick = release_tick(settings, "staging", tuesday, check_lock=False)
    assert (tick.version, tick.skip) == ("v1.10.0", None)  # 10 > 9 > 2: versions, not text
    now = utc_timestamp()
    record_release(
        settings.environments["staging"],
        ReleaseRecord(
            environment="staging",
            operation="deploy",
            version="v1.10.0",
            previous_version=None,
            status=ReleaseStatus.DEPLOYED,
            started_at=now,
            ended_at=now,
        ),
    )
    tick = release_tick(settings, "staging", tuesday, check_lock=False)
    assert tick.version is None and "release/v1.10.0, is on staging already" in tick.skip


@pytest.mark.unit
def test_production_never_takes_a_version_staging_rolled_back(tmp_path: Path) -> None:
    config = write_multi_config(tmp_path, {"staging": "u_s", "production": "u_p"}, redis_prefix="unused:")
    settings = load_settings(config)
    staging = settings.environments["staging"]
    now = utc_timestamp()
    for version, operation, previous in (
        ("v1.0.0", "deploy", None),
        ("v1.1.0", "deploy", "v1.0.0"),
        ("v1.0.0", "rollback", "v1.1.0"),
    ):
        record_release(
            staging,
            ReleaseRecord(
                environment="staging",
                operation=operation,
                version=version,
                previous_version=previous,
                status=ReleaseStatus.DEPLOYED if operation == "deploy" else ReleaseStatus.ROLLED_BACK,
                started_at=now,
                ended_at=now,
            ),
        )
    thursday = datetime(2026, 1, 8, 10, tzinfo=ZoneInfo("UTC"))  # the default anchor
    tick = release_tick(settings, "production", thursday, check_lock=False)
    assert tick.version == "v1.0.0"  # v1.1.0 was verified on staging, then rolled back there: not promoted


def test_the_demo_calendar_branch_ticks_approval_tag_and_webhook(
    tmp_path: Path,
    pg_databases: dict[str, str],
    redis_prefix: str,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    from ultra_ops.demo_calendar import run_calendar_demo

    config = write_multi_config(
        tmp_path, {e: pg_databases[e] for e in ("staging", "production")}, redis_prefix=redis_prefix
    )
    repo = tmp_path / "ultra-ai"
    config.write_text(
        config.read_text().replace(
            'timezone = "UTC"\n',
            'timezone = "Europe/Berlin"\n[notifications]\nwebhook_url_env = "ULTRA_TEST_DEMO_HOOK"\n',
            1,
        )
    )
    with_repo(config, repo)
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(config))  # the schedules read the config the CLI names
    monkeypatch.delenv("ULTRA_TEST_DEMO_HOOK", raising=False)
    for env in ("staging", "production"):
        assert main(["init", "--environment", env, "--config", str(config)]) == 0
    lines: list[str] = []
    settings = load_settings(config)
    try:
        code = run_calendar_demo(settings, ["--config", str(config)], run=main, progress=lines.append, out=lines.append)
    finally:
        for env in ("staging", "production"):
            main(["stop", "--environment", env, "--config", str(config)])
    assert code == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "production tick: skip: awaiting approval of v1.2.0" in text
    with DagsterInstance.from_config(str(dagster_home)) as instance:  # in the UI while it waited, then not
        shown = instance.fetch_materializations(AssetKey("pending_decisions"), limit=10, ascending=True).records
    items = [r.asset_materialization.metadata["items"].value for r in shown]
    assert [[(i["kind"], i["version"]) for i in listed] for listed in items] == [
        [("production approval", "v1.2.0")],
        [],
    ]
    branch = git(repo, "rev-parse", "release/v1.2.0")
    origin = tmp_path / "ultra-ai-origin.git"
    assert git(origin, "rev-parse", "v1.2.0^{commit}") == branch  # tagged in production, pushed
    (record,) = find_releases(settings.environments["production"])
    assert (record.version, record.commit, record.launched_by) == (
        "v1.2.0",
        branch,
        "schedule:production_release_schedule",
    )
    (staged,) = find_releases(settings.environments["staging"])
    assert (staged.version, staged.launched_by) == ("v1.2.0", "schedule:staging_release_schedule")
    events = [line.split("]")[0].strip(" [") for line in lines if line.startswith("  [")]
    assert events == ["deploy", "production_skipped", "deploy"]
    assert "ULTRA_TEST_DEMO_HOOK" not in os.environ  # the demo's webhook variable is put back


@pytest.mark.unit
def test_a_release_branch_that_cannot_be_pushed_is_not_left_behind(tmp_path: Path, dagster_home: Path, capsys) -> None:
    repo, remote = make_repo(tmp_path)
    config = with_repo(write_multi_config(tmp_path, {"staging": "unused_s"}, redis_prefix="unused:"), repo)
    remote.rename(tmp_path / "moved.git")  # origin is gone: the push fails
    assert main(["release-branch", "--tag", "v1.1.0", "--config", str(config)]) == 1
    assert "git exited" in capsys.readouterr().err
    assert git(repo, "for-each-ref", "refs/heads/release/") == ""  # as it was: a retry can make it
    (tmp_path / "moved.git").rename(remote)
    assert main(["release-branch", "--tag", "v1.1.0", "--config", str(config)]) == 0
    assert git(remote, "rev-parse", "refs/heads/release/v1.1.0") == git(repo, "rev-parse", "release/v1.1.0")


@pytest.mark.unit
def test_a_release_tag_that_cannot_be_pushed_is_not_left_behind(tmp_path: Path) -> None:
    from ultra_ops.engine.errors import OperationError

    repo, remote = make_repo(tmp_path)
    config = with_repo(write_multi_config(tmp_path, {"production": "unused_p"}, redis_prefix="unused:"), repo)
    production = load_settings(config).environments["production"]
    remote.rename(tmp_path / "moved.git")
    with pytest.raises(OperationError, match="pushing release tag v1.0.0 to origin failed"):
        tag_release(production, "v1.0.0")
    assert git(repo, "tag") == ""  # a re-executed deploy_tag step creates and pushes it
    (tmp_path / "moved.git").rename(remote)
    assert tag_release(production, "v1.0.0") == "created"
    assert git(remote, "rev-parse", "v1.0.0^{commit}") == git(repo, "rev-parse", "main")
