"""`ultra-ops deploy` of an older version: refused before a run exists, naming both versions; with
--allow-downgrade --reason it runs, the plan step recording current → target and the release
record keeping the reason."""

from __future__ import annotations

import getpass
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance

from ultra_ops.defs.shared import tags
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.release.records import find_releases, last_release
from ultra_ops_tests.support.stack import Stack


def test_a_downgrade_is_refused_before_a_run_unless_allowed_with_a_reason(
    stack: Stack, dagster_home: Path, capsys
) -> None:
    assert stack.ops("deploy", "--tag", "v1.1.0", "--skip-tests") == 0
    before = (find_releases(stack.env), list_backups(stack.env), stack.env.env_file.read_bytes())
    capsys.readouterr()
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0
        and "refusing to downgrade staging from v1.1.0 to v1.0.0:" in err
        and "--allow-downgrade" in err
    )
    assert stack.ops("deploy", "--tag", "v1.0.0", "--allow-downgrade") == 2  # a downgrade says why
    assert "--allow-downgrade needs --reason" in capsys.readouterr().err
    assert (find_releases(stack.env), list_backups(stack.env), stack.env.env_file.read_bytes()) == before
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert len(instance.get_runs()) == 1  # refused before a run existed

    reason = "v1.1.0 corrupts exports"
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests", "--allow-downgrade", "--reason", reason) == 0
    assert stack.get("/health").json()["version"] == "v1.0.0"
    record = last_release(stack.env)
    assert (record.version, record.previous_version, record.status) == ("v1.0.0", "v1.1.0", "deployed")
    assert record.reason == f"downgrade from v1.1.0: {reason}"
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_runs(limit=1)[0]
        plan = next(
            e.dagster_event.step_output_data.metadata
            for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_OUTPUT)
            if e.step_key == "deploy_plan"
        )
        logged = " ".join(e.user_message for e in instance.all_logs(run.run_id))
    assert plan["change"].value == "v1.1.0 → v1.0.0" and plan["current"].value == "v1.1.0"
    assert "staging: v1.1.0 → v1.0.0" in logged
    assert run.tags[tags.DOWNGRADE] == "true" and run.tags[tags.USER] == getpass.getuser()
    assert run.tags[tags.LAUNCHED_BY] == getpass.getuser() and run.tags[tags.SKIP_TESTS] == "true"
    # Redeploying the version that runs is no downgrade.
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
