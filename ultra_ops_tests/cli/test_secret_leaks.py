"""No secret reaches the Dagster event log, in any form, also when an op fails in a way nobody planned.

The threaded verify is run through the real CLI, each run a fresh process: the client libraries
are imported by whichever check thread first needs them, which is where the lazy import broke.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance, Failure, job, op
from dagster._serdes import serialize_value

from ultra_ops.defs.shared.steps import failures_as_dagster
from ultra_ops.engine.secrets import Redactor
from ultra_ops_tests.support.cli import run_cli
from ultra_ops_tests.support.configs import checks_config
from ultra_ops_tests.support.peers import HttpPeer, fixed, openai_models
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import REDIS_URL

RUNS = 20


def forms(secret: str) -> set[str]:
    """Every spelling of `secret` an error text could carry, written out here, not by the code tested."""
    found = set()
    for value in (secret, secret.strip()):
        found |= {
            value,
            repr(value)[1:-1],
            repr(value.encode())[2:-1],
            json.dumps(value)[1:-1],
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value),
        }
    return found


def leaks(instance: DagsterInstance, run_id: str, secret: str, core: str) -> list[str]:
    """Where the run's events carry the secret: every event whole (message, error records with their
    chain, user failure description, metadata), as stored."""
    found = []
    for entry in instance.all_logs(run_id):
        stored = serialize_value(entry)
        event = entry.dagster_event
        texts = [stored, entry.user_message or ""]
        if event is not None and event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            texts.append(data.error.to_string() if data.error else "")
            if data.user_failure_data is not None:
                texts.append(data.user_failure_data.description or "")
                texts += [str(getattr(v, "value", v)) for v in data.user_failure_data.metadata.values()]
        for text in texts:
            # The random core of the key stays as it is in every encoding (hex survives repr, JSON, URLs).
            if core in text or any(f in text for f in forms(secret)):
                found.append(f"{event.event_type_value if event else 'log'}: ...{text[:200]}")
                break
    return found


def test_threaded_verify_with_a_crlf_key_never_crashes_nor_leaks(
    tmp_path: Path, pg_database: str, dagster_home: Path
) -> None:
    core = uuid.uuid4().hex
    key, token = f"sk-{core}\r", f"tok-{core}\r\n"
    closed = free_port()
    with HttpPeer({"/v1/models": openai_models(key.strip()), "/api": fixed(200, {"ok": True})}) as peer:
        config = checks_config(
            tmp_path,
            pg_database,
            f"""
[environments.staging.redis]
url = "{REDIS_URL}"
[environments.staging.verify]
timeout_s = 2
retries = 0
health_urls = ["http://127.0.0.1:{closed}/health"]
endpoints = [{{ name = "closed", url = "http://127.0.0.1:{closed}/api" }}]
[[environments.staging.llm_providers]]
name = "openai"
models_url = "{peer.url("/v1/models")}"
api_key_env = "UO_LEAK_KEY"
[environments.staging.verify.smoke.auth]
base_url = "{peer.url("")}"
[[environments.staging.verify.smoke.auth.steps]]
name = "bearer"
path = "/api"
headers = {{ Authorization = "Bearer {{env:UO_LEAK_TOKEN}}" }}
""",
        )
        environ = {**os.environ, "UO_LEAK_KEY": key, "UO_LEAK_TOKEN": token}
        for _ in range(RUNS):
            done = run_cli("verify", config=config, environment="staging", env=environ, timeout=120)
            said = done.stdout + done.stderr
            # A verification that failed, with its report, not a crash of verify itself.
            assert done.returncode == 1, said
            assert "error: verification of staging failed" in said, said
            assert "AttributeError" not in said and "unexpected" not in said, said
            assert "UO_LEAK_KEY has white space or a line ending" in said, said
            # The smoke step's header went to httpx, which refused it quoting it: masked.
            assert "Illegal header value b'Bearer ***'" in said, said
            assert core not in said, said
        assert peer.hits["/v1/models"] == 0  # the key with a CR is never sent
    instance = DagsterInstance.get()
    runs = instance.get_runs()
    assert len(runs) == RUNS
    for run in runs:
        messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
        assert any("Illegal header value b'Bearer ***'" in m for m in messages)  # the scan had something to see
        assert leaks(instance, run.run_id, key, core) == []
        assert leaks(instance, run.run_id, token, core) == []


@op
def leaky_op() -> None:
    secret = os.environ["UO_LEAK_SECRET"]
    with failures_as_dagster(Redactor()):  # the environment's redactor misses it: a variable of the process
        try:
            # What httpx says about a header it refuses, then a bug while handling it.
            raise ValueError(f"Illegal header value {('Bearer ' + secret).encode()!r}")
        except ValueError as exc:
            raise KeyError(f"while sending {urllib.parse.quote(secret)}: {exc}") from exc


@job
def leaky_job() -> None:
    leaky_op()


def test_an_unexpected_exception_is_a_redacted_failure_without_its_chain(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = uuid.uuid4().hex
    secret = f"pw/{core} +\r"
    monkeypatch.setenv("UO_LEAK_SECRET", secret)
    instance = DagsterInstance.get()
    result = leaky_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data is not None
    description = failure.user_failure_data.description or ""
    assert description.startswith("KeyError: ") and description.endswith(
        "(unexpected: the traceback is in this failure's metadata)"
    )
    assert "***" in description
    trace = failure.user_failure_data.metadata["traceback"].value
    # The traceback of the original, chain included, for whoever debugs it: redacted.
    assert "ValueError: Illegal header value b'Bearer ***'" in trace and "KeyError" in trace
    assert failure.error is not None and failure.error.cause is None and failure.error.context is None
    assert leaks(instance, result.run_id, secret, core) == []


@op
def leaky_failure_op() -> None:
    secret = os.environ["UO_LEAK_SECRET"]
    with failures_as_dagster(Redactor([secret])):
        raise Failure(description=f"login with {secret!r} refused", metadata={"sent": secret, "body": {"pw": secret}})


@job
def leaky_failure_job() -> None:
    leaky_failure_op()


def test_a_failure_raised_in_an_op_is_redacted_too(dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core = uuid.uuid4().hex
    secret = f"pw-{core}\r\n"
    monkeypatch.setenv("UO_LEAK_SECRET", secret)
    instance = DagsterInstance.get()
    result = leaky_failure_job.execute_in_process(instance=instance, raise_on_error=False)
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure is not None and failure.description == "login with '***' refused"
    assert failure.metadata["sent"].value == "***" and failure.metadata["body"].value == {"pw": "***"}
    assert leaks(instance, result.run_id, secret, core) == []
