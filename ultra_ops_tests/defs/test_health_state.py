"""The health_state asset: fed by verify runs, and by the health monitor sensor, which polls a real
/health?detail=true on loopback and starts a run only when the state changed; its `healthy` check
is red on an unhealthy state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context

from ultra_ops.cli import main
from ultra_ops_tests.support.configs import checks_config
from ultra_ops_tests.support.peers import HttpPeer
from ultra_ops_tests.support.services import REDIS_URL

HEALTHY = {"status": "ok", "checks": {"postgres": {"status": "ok"}, "redis": {"status": "ok"}}}
DEGRADED = {"status": "degraded", "checks": {"postgres": {"status": "ok"}, "redis": {"status": "error"}}}


class Switch:
    """A /health?detail=true whose answer the test flips."""

    def __init__(self) -> None:
        self.body, self.status = HEALTHY, 200

    def route(self, headers: dict[str, str]) -> tuple[int, object, float]:
        return self.status, self.body, 0.0


@pytest.fixture
def monitored(tmp_path: Path, pg_database: str, dagster_home: Path, monkeypatch: pytest.MonkeyPatch):
    switch = Switch()
    peer = HttpPeer({"/health": switch.route})
    config = checks_config(
        tmp_path,
        pg_database,
        f"""
[calendar.health_monitor]
interval_s = 30
[environments.staging.redis]
url = "{REDIS_URL}"
[environments.staging.verify]
timeout_s = 3
retries = 0
health_urls = ["{peer.url("/health?detail=true")}"]
""",
    )
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(config))
    yield switch, config, dagster_home
    peer.close()


def _check(instance: DagsterInstance, name: str):
    from dagster import AssetCheckKey

    record = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey("health_state"), name), limit=1
    )[0]
    return record.event.dagster_event.event_specific_data


def test_sensor_requests_a_run_only_when_health_changed(monitored) -> None:
    from ultra_ops.definitions import defs
    from ultra_ops.defs.release.sensors import release_sensors

    switch, _config, home = monitored
    # Built now, from this test's config (the code location read whichever config it loaded with).
    sensor = next(s for s in release_sensors() if s.name == "health_monitor_sensor")
    assert sensor.minimum_interval_seconds == 30
    with DagsterInstance.from_config(str(home)) as instance:

        def tick(cursor: str | None):
            context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
            result = sensor.evaluate_tick(context)
            return result, context.cursor

        first, cursor = tick(None)  # no last state: the first poll is a change
        assert [r.partition_key for r in first.run_requests] == ["staging"]
        same, cursor = tick(cursor)
        assert same.run_requests == [] and "no change: staging healthy" in same.skip_message

        switch.body, switch.status = DEGRADED, 503
        changed, cursor = tick(cursor)
        (request,) = changed.run_requests
        assert request.partition_key == "staging" and request.job_name in (None, "health_state_job")
        assert "redis: error" in request.tags["ultra_ops/health_change"]
        assert request.run_key != first.run_requests[0].run_key
        again, cursor = tick(cursor)
        assert again.run_requests == []

        switch.body, switch.status = HEALTHY, 200  # back to the first state: a new run, a new key
        back, _ = tick(cursor)
        assert len(back.run_requests) == 1
        assert back.run_requests[0].run_key not in {first.run_requests[0].run_key, request.run_key}


def test_health_state_check_is_red_on_an_unhealthy_state(monitored, capsys) -> None:
    from dagster import AssetCheckSeverity

    from ultra_ops.definitions import defs

    switch, config, home = monitored
    # The health monitor's job, as its run request would start it, against the real instance.
    with DagsterInstance.from_config(str(home)) as instance:
        result = defs.resolve_job_def("health_state_job").execute_in_process(instance=instance, partition_key="staging")
        assert result.success
        evaluation = _check(instance, "healthy")
        assert evaluation.passed is True

        switch.body, switch.status = DEGRADED, 503
        result = defs.resolve_job_def("health_state_job").execute_in_process(
            instance=instance, partition_key="staging", raise_on_error=False
        )
        # The state is recorded, then its blocking checks fail the run: red in the run list too.
        assert not result.success
        evaluation = _check(instance, "healthy")
        assert evaluation.passed is False and evaluation.severity == AssetCheckSeverity.ERROR
        assert _check(instance, "health_endpoints").passed is False
        event = instance.get_latest_materialization_event(AssetKey("health_state"))
        metadata = event.asset_materialization.metadata
        assert event.asset_materialization.partition == "staging"
        assert metadata["healthy"].value is False and metadata["failed"].value == 1
        assert metadata["source"].value == "monitor"
        assert any(k.endswith("latency_ms") for k in metadata)  # numbers the UI plots
        # Keyed by kind, the same in every environment, not by the health URL (issue 16).
        assert "health_latency_ms" in metadata and not any("http" in k for k in metadata)
        (line,) = instance.fetch_observations(AssetKey(["health", "staging"]), limit=1).records
        assert line.asset_observation.metadata["healthy"].value is False  # staging's own line

    # A verify run records the same partition, from the CLI, and its check turns green again.
    switch.body, switch.status = HEALTHY, 200
    assert main(["verify", "--environment", "staging", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    with DagsterInstance.from_config(str(home)) as instance:
        assert _check(instance, "healthy").passed is True
        event = instance.get_latest_materialization_event(AssetKey("health_state"))
        assert event.asset_materialization.metadata["source"].value == "verify"


def test_verify_window_from_the_cli(monitored, capsys) -> None:
    switch, config, home = monitored
    config.write_text(config.read_text() + "\n[environments.staging.verify.window]\nsamples = 2\nfailure_limit = 1\n")
    args = ["verify", "--environment", "staging", "--config", str(config), "--window"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "SAMPLE" in out and "window passed: 0 of 2 samples failed" in out
    switch.body, switch.status = DEGRADED, 503
    assert main([*args, "--json"]) == 1  # both samples fail: more than the limit of 1
    window = json.loads(capsys.readouterr().out)
    assert window["outcome"] == "failed" and window["failed_samples"] == 2 and len(window["samples"]) == 2
    assert main(["verify", "--environment", "staging", "--config", str(config), "--by", "x"]) == 2
