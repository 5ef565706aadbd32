"""The verification window on real deploys of the sample service: a release that degrades after it
starts passes one pass but fails the window and is rolled back; an inconclusive window waits for a
person's decision and records who made it."""

from __future__ import annotations

import getpass
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from ultra_ops.engine.envfile import update_env_file
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.release.records import find_releases
from ultra_ops.engine.secrets import NullLog, Redactor
from ultra_ops.engine.settings import load_settings
from ultra_ops.engine.verify.decisions import ABANDONED_DECIDER, TIMEOUT_DECIDER, decide, get, pending
from ultra_ops.engine.verify.window import FAILED, INCONCLUSIVE, PASSED, settle, verify_window
from ultra_ops_tests.support.cli import start_cli
from ultra_ops_tests.support.configs import checks_config
from ultra_ops_tests.support.peers import HttpPeer
from ultra_ops_tests.support.stack import Stack

# The release degrades 30 s after it starts; here 15 s, with samples 8 s apart: the same
# meaning (one pass right after the start sees a healthy release, the window's third sample, 16 s
# after the first, does not) in half the time.
DEGRADE_AFTER_S = 15
WINDOW = "[environments.staging.verify.window]\nsamples = 3\ninterval_s = 8\nfailure_limit = 0\n"


def _with_window(stack: Stack, table: str) -> None:
    text = stack.config.read_text()
    if "[environments.staging.verify.window]" in text:
        text = text[: text.index("[environments.staging.verify.window]")]
    stack.config.write_text(text + "\n" + table)
    stack.env = load_settings(stack.config).environment("staging")


def _last_check(home: Path, name: str):
    with DagsterInstance.from_config(str(home)) as instance:
        record = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey("health_state"), name), limit=1
        )[0]
        return record.event.dagster_event.event_specific_data


def test_a_release_that_degrades_passes_one_pass_but_fails_the_window(stack: Stack, dagster_home: Path, capsys) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    _with_window(stack, WINDOW)
    # v1.1.0 goes bad 15 s after it starts (the env file names the version: v1.0.0, rolled back to, does not).
    update_env_file(
        stack.env.env_file, {"ULTRA_DEGRADE_AFTER_S": str(DEGRADE_AFTER_S), "ULTRA_DEGRADE_VERSION": "v1.1.0"}
    )

    assert stack.ops("deploy", "--tag", "v1.1.0") == 1
    err = capsys.readouterr().err
    assert "verification of v1.1.0 on staging failed: window failed" in err
    assert "rolled back to backup" in err
    assert stack.get("/health").json()["version"] == "v1.0.0"
    assert [r.status for r in find_releases(stack.env)] == ["rolled_back", "deployed"]
    window = _last_check(dagster_home, "verification_window")
    assert window.passed is False and window.metadata["outcome"].value == FAILED
    assert window.metadata["failed_samples"].value >= 1

    # The same release judged by one pass, as before the window: it goes through.
    _with_window(stack, "[environments.staging.verify.window]\nsamples = 1\n")
    assert stack.ops("deploy", "--tag", "v1.1.0") == 0
    assert stack.get("/health").json()["version"] == "v1.1.0"


@pytest.fixture
def flaky_endpoint():
    """An endpoint that fails its next `peer.failures` requests (2 at first: one sample with its
    retry), then answers."""
    lock = threading.Lock()

    def route(headers: dict[str, str]) -> tuple[int, object, float]:
        with lock:
            failing = peer.failures > 0
            peer.failures -= failing
        return (503, {"error": "warming up"}, 0.0) if failing else (200, {"ok": True}, 0.0)

    with HttpPeer({"/flaky": route}) as peer:
        peer.failures = 2
        yield peer


def _deploy_until_it_asks(stack: Stack, tag: str) -> tuple[subprocess.Popen, object]:
    """Start a deploy in its own process and wait for the event: its request for a decision."""
    deploy = start_cli("deploy", "--tag", tag, environment="staging", config=stack.config)
    deadline = time.monotonic() + 120
    while not pending(stack.env):
        if deploy.poll() is not None or time.monotonic() > deadline:
            deploy.kill()
            raise AssertionError(f"the deploy never asked for a decision: {deploy.communicate()}")
        time.sleep(0.2)
    (request,) = pending(stack.env)
    return deploy, request


def _finish(deploy: subprocess.Popen) -> str:
    try:
        return deploy.communicate(timeout=180)[1]
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.communicate()


def test_an_inconclusive_window_waits_for_a_person_and_records_who(
    tmp_path: Path, pg_database: str, dagster_home: Path, flaky_endpoint, capsys
) -> None:
    stack = Stack(tmp_path, pg_database)
    try:
        assert stack.ops("deploy", "--tag", "v1.0.0") == 0
        text = stack.config.read_text().replace(
            "endpoints = [{", f'endpoints = [{{ name = "flaky", url = "{flaky_endpoint.url("/flaky")}" }}, {{', 1
        )
        stack.config.write_text(text)
        _with_window(
            stack,
            "[environments.staging.verify.window]\nsamples = 3\ninterval_s = 1\nfailure_limit = 1\n"
            'on_inconclusive = "wait"\ndecision_wait_s = 300\n',
        )
        deploy, request = _deploy_until_it_asks(stack, "v1.1.0")
        assert request.version == "v1.1.0" and "window inconclusive: 1 of 3 samples failed" in request.summary
        assert deploy.poll() is None  # still waiting, holding its lock
        assert stack.ops("verify", "--decide", "approve", "--by", "alice", "--reason", "warm-up blip") == 0
        assert "approve decided by alice" in capsys.readouterr().out
        err = _finish(deploy)
        assert deploy.returncode == 0, err
        assert "approve decided by alice" in err
        assert stack.get("/health").json()["version"] == "v1.1.0"
        assert not pending(stack.env)
        with pytest.raises(InputError, match="no verification of staging is waiting"):
            decide(stack.env, "rollback", by="bob")
        assert stack.ops("verify", "--decide", "rollback", "--by", "bob") == 2  # nothing to decide: bad input, no run
        window = _last_check(dagster_home, "verification_window")
        assert window.passed is True and window.metadata["outcome"].value == INCONCLUSIVE
        assert window.metadata["decided_by"].value == "alice"
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            decision_run = next(r for r in instance.get_runs() if r.job_name == "verification_decision_job")
            # No environment tag: the queue's one run per environment must not hold it behind the deploy.
            assert "ultra_ops/environment" not in decision_run.tags
            assert decision_run.tags["ultra_ops/launched_by"] == getpass.getuser()
            # In view while it waited: the waiting deploy's run showed it, the decision's run cleared it.
            shown = instance.fetch_materializations(AssetKey("pending_decisions"), limit=10, ascending=True).records
            shown = [(r.run_id, r.asset_materialization.metadata["pending"].value) for r in shown]
            assert shown == [(request.run_id, 1), (decision_run.run_id, 0)]
        record = get(stack.env, request.id)
        assert (record.decision, record.decided_by, record.reason) == ("approve", "alice", "warm-up blip")
        assert record.launched_by == getpass.getuser()

        # A deploy stopped (SIGTERM: an operator's Ctrl-C, the platform stopping the run) while it
        # waits rolls back, and its request is closed: nobody answers a question nobody asks.
        flaky_endpoint.failures = 2
        deploy, request = _deploy_until_it_asks(stack, "v1.2.0")
        deploy.send_signal(signal.SIGTERM)
        err = _finish(deploy)
        assert deploy.returncode != 0 and "rolled back to backup" in err
        assert stack.get("/health").json()["version"] == "v1.1.0"
        record = get(stack.env, request.id)
        assert record.decision == "rollback" and record.decided_by == ABANDONED_DECIDER
        assert [r.status for r in find_releases(stack.env)] == ["rolled_back", "deployed", "deployed"]
    finally:
        stack.stop()


def test_nobody_deciding_rolls_back_after_the_wait(
    tmp_path: Path, pg_database: str, flaky_endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = HttpPeer({"/hooks/T0-secret": lambda headers: (200, {}, 0.0)})
    monkeypatch.setenv("UO_TEST_DECISION_HOOK", hook.url("/hooks/T0-secret"))
    config = checks_config(
        tmp_path,
        pg_database,
        f"""
[notifications]
webhook_url_env = "UO_TEST_DECISION_HOOK"
[environments.production.verify]
timeout_s = 3
retries = 0
endpoints = [{{ name = "flaky", url = "{flaky_endpoint.url("/flaky")}" }}]
[environments.production.verify.window]
samples = 4
failure_limit = 2
decision_wait_s = 0.5
""",
        environment="production",
    )
    env = load_settings(config).environment("production")
    window = verify_window(env, redact=Redactor(), log=NullLog())
    assert window.outcome == INCONCLUSIVE and window.failed_samples == 2 and len(window.samples) == 4
    notifications = load_settings(config).notifications
    settled = settle(
        env, window, request_id="deploy-test", version="v2.0.0", run_id=None, notifications=notifications, log=NullLog()
    )
    hook.close()
    assert hook.hits["/hooks/T0-secret"] == 1  # someone was told a decision is needed
    assert not settled.ok and settled.decision["decided_by"] == TIMEOUT_DECIDER
    assert settled.decision["decision"] == "rollback" and "nobody decided within 0.5s" in settled.decision["reason"]
    with pytest.raises(InputError, match="decided already: rollback by timeout"):
        decide(env, "approve", by="carol", request_id="deploy-test")
    # A request left open by a deploy that was killed while it waited is closed by the next one.
    from ultra_ops.engine.verify.decisions import ask

    ask(env, "deploy-killed", version="v2.0.1", run_id=None, summary="s")
    ask(env, "deploy-next", version="v2.0.2", run_id=None, summary="s")
    assert [r.id for r in pending(env)] == ["deploy-next"]
    assert get(env, "deploy-killed").decided_by == ABANDONED_DECIDER
    # Every sample passing is a pass, with nothing to decide.
    assert verify_window(env, redact=Redactor(), log=NullLog()).outcome == PASSED
