"""Sensors driven by real runs in a test instance, and the webhook they tell, on loopback."""

from __future__ import annotations

import json
import queue
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context, build_sensor_context

from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.store import MANIFEST
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.stack import Stack

SECRET = "whsec-Tq93LmNeverInABody"


class Webhook:
    """A Slack-style webhook on loopback: keeps every JSON body it receives; fails the first
    `fail_first` requests with 500, to show retries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: queue.Queue = queue.Queue()
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(500)
                else:
                    outer.bodies.put(json.loads(data))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/hooks/{SECRET}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch):
    hook = Webhook(fail_first=1)
    monkeypatch.setenv("ULTRA_TEST_WEBHOOK", hook.url)
    yield hook
    hook.close()


@pytest.fixture
def notified_stack(
    tmp_path: Path, pg_database: str, dagster_home: Path, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
):
    stack = Stack(tmp_path, pg_database, extra="rollback_on_failed_verification = true")
    text = stack.config.read_text()
    stack.config.write_text(
        text.replace(
            'timezone = "UTC"\n',
            'timezone = "UTC"\n\n[notifications]\nwebhook_url_env = "ULTRA_TEST_WEBHOOK"\ntimeout_s = 2\nretries = 2\n',
            1,
        )
    )
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(stack.config))
    yield stack
    stack.stop()


def _last_run(instance: DagsterInstance, job: str):
    return next(r for r in instance.get_runs() if r.job_name == job)


def _status_event(instance: DagsterInstance, run_id: str, kind: DagsterEventType):
    return next(e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event_type == kind)


def test_deploy_then_failed_verification_drive_the_sensors(
    notified_stack: Stack, dagster_home: Path, webhook: Webhook
) -> None:
    from ultra_ops.defs.release.sensors import release_sensors

    sensors = {s.name: s for s in release_sensors()}
    stack = notified_stack
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        deploy = _last_run(instance, "deploy_job")
        context = build_run_status_sensor_context(
            sensor_name="verify_after_deploy_sensor",
            dagster_instance=instance,
            dagster_run=deploy,
            dagster_event=_status_event(instance, deploy.run_id, DagsterEventType.RUN_SUCCESS),
        )
        request = sensors["verify_after_deploy_sensor"](context)
        assert request.run_key == deploy.run_id and request.partition_key == "staging"
        assert request.tags["ultra_ops/version"] == "v1.0.0"

        context = build_run_status_sensor_context(
            sensor_name="release_notification_sensor",
            dagster_instance=instance,
            dagster_run=deploy,
            dagster_event=_status_event(instance, deploy.run_id, DagsterEventType.RUN_SUCCESS),
        )
        sensors["release_notification_sensor"](context)
    body = webhook.bodies.get(timeout=30)  # delivered on the retry after a 500
    assert body["event"] == "deploy" and body["environment"] == "staging"
    assert "v1.0.0 deployed" in body["text"] and body["fields"]["run"] == deploy.run_id

    stack.stop()  # the service is down: the next verification fails
    assert stack.ops("verify") == 1
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        failed = _last_run(instance, "verify_job")
        context = build_run_status_sensor_context(
            sensor_name="failed_verification_sensor",
            dagster_instance=instance,
            dagster_run=failed,
            dagster_event=_status_event(instance, failed.run_id, DagsterEventType.RUN_FAILURE),
        )
        request = sensors["failed_verification_sensor"](context)
    assert request.run_key == failed.run_id and request.partition_key == "staging"
    assert request.tags["ultra_ops/operation"] == "rollback"
    body = webhook.bodies.get(timeout=30)
    assert body["event"] == "verification_failed" and "rolling back" in body["text"]
    assert SECRET not in json.dumps(body)


def test_backup_freshness_alerts_once_a_day(notified_stack: Stack, webhook: Webhook) -> None:
    from ultra_ops.defs.backups.sensors import backup_sensors

    (freshness,) = backup_sensors()
    info = create_backup(notified_stack.env, compression=0)
    context = build_sensor_context()
    assert "every environment has a fresh backup" in freshness(context).skip_message
    manifest = info.path / MANIFEST
    data = json.loads(manifest.read_text())
    data["created_at"] = (datetime.now(UTC) - timedelta(hours=30)).isoformat()
    manifest.write_text(json.dumps(data))
    result = freshness(context)
    # The alert, and a run of the asset's freshness check for the environment (red in the UI).
    [request] = result.run_requests
    assert [k.name for k in request.asset_check_keys] == ["backup_freshness"]
    assert request.tags["ultra_ops/environment"] == "staging"
    body = webhook.bodies.get(timeout=30)
    assert body["event"] == "backup_stale" and "limit 26 h" in body["text"]
    cursor = result.cursor
    assert json.loads(cursor)["staging"] == datetime.now(UTC).date().isoformat()
    again = freshness(build_sensor_context(cursor=cursor))
    assert "staging: newest backup is 30.0 h old" in again.skip_message
    assert webhook.bodies.empty()  # told once today already


def test_a_skipped_production_tick_is_told_to_the_webhook(
    tmp_path: Path, pg_databases: dict[str, str], redis_prefix: str, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoneinfo import ZoneInfo

    from dagster import build_schedule_context

    from ultra_ops.definitions import defs
    from ultra_ops.defs.calendar.schedules import calendar_schedules
    from ultra_ops_tests.support.configs import write_multi_config

    password = "pg-Pr0d-Secret-7f3a"
    config = write_multi_config(
        tmp_path, {e: pg_databases[e] for e in ("staging", "production")}, redis_prefix=redis_prefix
    )
    text = config.read_text().replace(
        'timezone = "UTC"\n',
        'timezone = "Europe/Berlin"\n\n[notifications]\n'
        'webhook_url_env = "ULTRA_TEST_WEBHOOK"\ntimeout_s = 2\nretries = 2\n\n'
        '[calendar]\nproduction = { day = "thursday", time = "10:00", every_weeks = 2, '
        "anchor = 2026-01-01 }\n"
        # A careless operator pasted the secret into a freeze's name.
        f'freezes = [{{ name = "db move {password}", start = 2027-03-20, '
        "end = 2027-03-30 }]\n",
        1,
    )
    # A production secret set in the environment: the body must not carry it, nor the webhook's own URL.
    text = text.replace(
        f'name = "{pg_databases["production"]}"',
        f'name = "{pg_databases["production"]}"\npassword_env = "ULTRA_TEST_PROD_PASSWORD"',
    )
    config.write_text(text)
    monkeypatch.setenv("ULTRA_TEST_PROD_PASSWORD", password)
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(config))
    production = {s.name: s for s in calendar_schedules()}["production_release_schedule"]
    thursday = datetime(2027, 3, 11, 10, tzinfo=ZoneInfo("Europe/Berlin"))  # a release week
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance, scheduled_execution_time=thursday, repository_def=defs.get_repository_def()
        )
        result = production.evaluate_tick(context)
    assert not result.run_requests and "nothing new to release" in result.skip_message
    body = webhook.bodies.get(timeout=30)  # delivered on the retry after the fixture's first 500
    assert body["event"] == "production_skipped" and body["environment"] == "production"
    assert "release tick skipped: nothing new to release" in body["text"]
    sent = json.dumps(body)
    assert password not in sent and SECRET not in sent and webhook.url not in sent
    # An off week is no skip worth telling: the cron only runs on Thursdays, every other one is off.
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=thursday + timedelta(days=7),
            repository_def=defs.get_repository_def(),
        )
        assert "off week" in production.evaluate_tick(context).skip_message
    assert webhook.bodies.empty()
    # A skip whose reason carries the secret: the body masks it.
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=thursday + timedelta(days=14),
            repository_def=defs.get_repository_def(),
        )
        skipped = production.evaluate_tick(context).skip_message  # kept in Dagster's tick history
    assert "db move ***" in skipped and password not in skipped
    body = webhook.bodies.get(timeout=30)
    assert "inside the freeze 'db move ***'" in body["text"] and password not in json.dumps(body)
