"""Sensors driven by real runs in a test instance, and the webhook they tell, on loopback."""

from __future__ import annotations

import json
import queue
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Stack, free_port
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context, build_sensor_context

from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.store import MANIFEST

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
def notified_stack(tmp_path: Path, pg_database: str, dagster_home: Path, webhook: Webhook,
                   monkeypatch: pytest.MonkeyPatch):
    stack = Stack(tmp_path, pg_database, extra="rollback_on_failed_verification = true")
    text = stack.config.read_text()
    stack.config.write_text(text.replace('timezone = "UTC"\n', 'timezone = "UTC"\n\n[notifications]\n'
                                         'webhook_url_env = "ULTRA_TEST_WEBHOOK"\ntimeout_s = 2\nretries = 2\n', 1))
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(stack.config))
    yield stack
    stack.stop()


def _last_run(instance: DagsterInstance, job: str):
    return next(r for r in instance.get_runs() if r.job_name == job)


def _status_event(instance: DagsterInstance, run_id: str, kind: DagsterEventType):
    return next(e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event_type == kind)


def test_deploy_then_failed_verification_drive_the_sensors(notified_stack: Stack, dagster_home: Path,
                                                           webhook: Webhook) -> None:
    from ultra_ops.defs.release.sensors import release_sensors

    sensors = {s.name: s for s in release_sensors()}
    stack = notified_stack
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        deploy = _last_run(instance, "deploy_job")
        context = build_run_status_sensor_context(
            sensor_name="verify_after_deploy_sensor", dagster_instance=instance, dagster_run=deploy,
            dagster_event=_status_event(instance, deploy.run_id, DagsterEventType.RUN_SUCCESS))
        request = sensors["verify_after_deploy_sensor"](context)
        assert request.run_key == deploy.run_id and request.partition_key == "staging"
        assert request.tags["ultra_ops/version"] == "v1.0.0"

        context = build_run_status_sensor_context(
            sensor_name="release_notification_sensor", dagster_instance=instance, dagster_run=deploy,
            dagster_event=_status_event(instance, deploy.run_id, DagsterEventType.RUN_SUCCESS))
        sensors["release_notification_sensor"](context)
    body = webhook.bodies.get(timeout=30)  # delivered on the retry after a 500
    assert body["event"] == "deploy" and body["environment"] == "staging"
    assert "v1.0.0 deployed" in body["text"] and body["fields"]["run"] == deploy.run_id

    stack.stop()  # the service is down: the next verification fails
    assert stack.ops("verify") == 1
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        failed = _last_run(instance, "verify_job")
        context = build_run_status_sensor_context(
            sensor_name="failed_verification_sensor", dagster_instance=instance, dagster_run=failed,
            dagster_event=_status_event(instance, failed.run_id, DagsterEventType.RUN_FAILURE))
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
