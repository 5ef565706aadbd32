"""What an operator sees in the UI, read through the real webserver's GraphQL as the UI reads it:
what runs where (the releases asset, one materialization per release record, failed ones too), the
backups' checks evaluated in the run that took each backup, a check launched with no environment
refused with a reason, each environment's health lines under the same keys, the calendar and the
decisions that wait for a person."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterEventType, DagsterInstance

from ultra_ops.engine.verify.decisions import ask
from ultra_ops_tests.support.stack import Stack
from ultra_ops_tests.support.webserver import Webserver

_MATERIALIZATIONS = """
query Events($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(partitions: $partitions) { partition runId metadataEntries { ...Entry } }
      assetObservations(limit: 10) { partition metadataEntries { ...Entry } }
    }
  }
}
fragment Entry on MetadataEntry {
  label
  ... on TextMetadataEntry { text }
  ... on MarkdownMetadataEntry { mdStr }
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
}"""

_CHECKS = """
query Checks($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetChecksOrError { ... on AssetChecks { checks {
        name executionForLatestMaterialization { status runId evaluation { success description } }
      } } }
    }
  }
}"""


def _entries(event: dict) -> dict:
    fields = ("text", "mdStr", "intValue", "floatValue")
    return {e["label"]: next((e[k] for k in fields if e.get(k) is not None), None) for e in event["metadataEntries"]}


def _events(web: Webserver, path: list[str], partitions: list[str] | None = None) -> dict:
    return web.query(_MATERIALIZATIONS, key={"path": path}, partitions=partitions)["assetOrError"]


def test_the_ui_shows_what_runs_where_checks_calendar_and_decisions(stack: Stack, dagster_home: Path) -> None:
    stack.env.env_file.chmod(0o644)
    assert stack.ops("deploy", "--tag", "v1.0.0") == 1  # the checklist refuses it: a failed record
    stack.env.env_file.chmod(0o600)
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    assert stack.ops("deploy", "--tag", "v1.0.1") == 0
    assert stack.ops("rollback", "--yes") == 0  # back to the backup v1.0.1's deploy took: v1.0.0 runs
    ask(stack.env, "req-ui", version="v1.0.0", run_id="run-waiting", summary="window inconclusive")
    try:
        with Webserver(dagster_home, env={"ULTRA_OPS_CONFIG": str(stack.config)}) as web:
            # What runs where: newest first, each record of the run that wrote it.
            releases = [_entries(m) for m in _events(web, ["releases"], ["staging"])["assetMaterializations"]]
            assert [(r["operation"], r["version"], r["status"]) for r in releases][::-1] == [
                ("deploy", "v1.0.0", "failed"),
                ("deploy", "v1.0.0", "deployed"),
                ("deploy", "v1.0.1", "deployed"),
                ("rollback", "v1.0.0", "rolled_back"),
            ]
            assert releases[0]["running"] == "v1.0.0" and releases[0]["previous_version"] == "v1.0.1"
            assert releases[0]["backup_id"] and releases[-1]["reason"].startswith("pre-release checklist failed")
            assert releases[0]["ended_at"].endswith(" UTC")  # the config's zone (this config's is UTC), named

            # Every backup's cheap checks and freshness were evaluated in the run that took it.
            checks = web.query(_CHECKS, key={"path": ["backups"]})["assetNodeOrError"]["assetChecksOrError"]["checks"]
            latest = {c["name"]: c["executionForLatestMaterialization"] for c in checks}
            for name in ("backup_checksums", "backup_dump_readable", "backup_freshness"):
                assert latest[name]["status"] == "SUCCEEDED" and latest[name]["evaluation"]["success"], name

            # A check run that names no environment ("Execute" on the asset page) is refused, saying how.
            run_id = web.client.submit_job_execution("backup_checks_job")
            assert web.wait(run_id) == "FAILURE"
            with DagsterInstance.from_config(str(dagster_home)) as instance:
                logged = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
            reasons = [e.dagster_event.step_failure_data.user_failure_data.description for e in logged]
            assert len(reasons) == 4 and all("this run names none" in r for r in reasons)
            assert "tag ultra_ops/environment=<staging>" in reasons[0]

            # Staging's health lines: the same keys at every verification, none naming a URL.
            observations = _events(web, ["health", "staging"])["assetObservations"]
            keys = [set(_entries(o)) for o in observations]
            assert len(keys) >= 2 and all(k == keys[0] for k in keys)
            assert "health_latency_ms" in keys[0] and not any("http" in k for k in keys[0])

            # The calendar and what waits for a person, refreshed by their job as the schedule does.
            run_id = web.client.submit_job_execution("release_calendar_job")
            assert web.wait(run_id) == "SUCCESS"
            (calendar,) = _events(web, ["release_calendar"])["assetMaterializations"][:1]
            assert "staging_release_schedule" in _entries(calendar)["ticks"]
            pending = _entries(_events(web, ["pending_decisions"])["assetMaterializations"][0])
            assert pending["pending"] == 1 and "--request req-ui" in pending["decisions"]
            assert "verification_decision_job" in pending["launchpad"] and "request_id: req-ui" in pending["launchpad"]

            # Decided: the decision's own run records that nothing waits any more.
            assert stack.ops("verify", "--decide", "approve", "--by", "bob") == 0
            pending = _entries(_events(web, ["pending_decisions"])["assetMaterializations"][0])
            assert pending["pending"] == 0 and pending["decisions"] == "Nothing waits for a decision."
    finally:
        stack.stop()
