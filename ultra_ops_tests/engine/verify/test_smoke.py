"""Smoke tests against the real sample service (authentication on, an LLM stand-in on loopback,
uploads enabled): the release document's manual verification, and how a failing step is named."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.release.migrate import apply_migrations
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops.engine.verify.runner import verify_environment
from ultra_ops.engine.verify.smoke import metric_value
from ultra_ops.sample_service.llm_standin import make_server as llm_standin_server
from ultra_ops_tests.support.configs import checks_config, write_config
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG, REDIS_URL

PASSWORD = "pw-Smoke-7f3kQz91"
LLM_DELAY_S = 0.3  # every completion takes at least this long: a prompt step is never faster


@pytest.fixture
def service(tmp_path: Path, pg_database: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The sample service with authentication, uploads and a slow LLM stand-in; its base URL."""
    (tmp_path / "migrate").mkdir()
    apply_migrations(load_settings(write_config(tmp_path / "migrate", pg_database)).environment("staging"))
    llm = llm_standin_server(free_port(), delay_s=LLM_DELAY_S)
    threading.Thread(target=llm.serve_forever, daemon=True).start()
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "ULTRA_VERSION": "v1.0.0",
        "ULTRA_ENVIRONMENT": "staging",
        "PGHOST": PG["host"],
        "PGPORT": str(PG["port"]),
        "PGUSER": PG["user"],
        "PGDATABASE": pg_database,
        "REDIS_URL": REDIS_URL,
        "ULTRA_REDIS_PREFIX": redis_prefix,
        "ULTRA_AUTH_PASSWORD": PASSWORD,
        "ULTRA_LLM_URL": f"http://127.0.0.1:{llm.server_address[1]}/v1",
        "ULTRA_UPLOAD_DIR": str(tmp_path / "uploads"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ultra_ops.sample_service"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(base + "/health", timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, "sample service did not start"
            time.sleep(0.05)
    monkeypatch.setenv("ULTRA_TEST_SMOKE_PASSWORD", PASSWORD)
    yield base
    proc.kill()
    proc.wait()
    llm.shutdown()
    llm.server_close()


def smoke_config(tmp_path: Path, database: str, base: str, **overrides: str) -> Environment:
    """The release document's smoke sequence (as the shipped config has it), with `overrides`
    replacing lines of a step by their key (`step.key`)."""
    steps = {
        "log in": {
            "method": '"POST"',
            "path": '"/api/v1/auth/login"',
            "json": '{ username = "admin", password = "{env:ULTRA_TEST_SMOKE_PASSWORD}" }',
            "only_if_env": '"ULTRA_TEST_SMOKE_PASSWORD"',
            "expect_status": "200",
            "expect_json": '{ token_type = "bearer" }',
            "expect_fields": '{ token = "string" }',
            "capture": '{ token = "token" }',
        },
        "protected endpoint": {
            "path": '"/api/v1/me"',
            "headers": '{ Authorization = "Bearer {token}" }',
            "expect_status": "200",
            "expect_json": '{ user = "admin" }',
        },
        "metrics before": {"path": '"/metrics"', "capture_metrics": '{ prompts_before = "ultra_prompts_total" }'},
        "test prompt": {
            "method": '"POST"',
            "path": '"/api/v1/prompt"',
            "headers": '{ Authorization = "Bearer {token}" }',
            "json": '{ prompt = "is the release healthy", max_tokens = 16 }',
            "expect_status": "200",
            "expect_fields": '{ response = "string", model = "string", "usage.total_tokens" = "integer", '
            'latency_ms = "number" }',
            "max_latency_ms": "5000",
        },
        "upload": {
            "method": '"POST"',
            "path": '"/api/v1/files"',
            "headers": '{ Authorization = "Bearer {token}", X-Filename = "smoke.txt" }',
            "body": '"hello ultra"',
            "expect_status": "201",
            "expect_json": "{ size = 11 }",
            "expect_fields": '{ id = "string", sha256 = "string" }',
        },
        "metrics moved": {"path": '"/metrics"', "expect_metric_increase": '{ ultra_prompts_total = "prompts_before" }'},
    }
    for key, value in overrides.items():
        step, _, field = key.partition(".")
        steps[step][field] = value
    text = "".join(
        f'\n[[environments.staging.verify.smoke.release.steps]]\nname = "{name}"\n'
        + "".join(f"{k} = {v}\n" for k, v in fields.items())
        for name, fields in steps.items()
    )
    config = checks_config(
        tmp_path,
        database,
        f"""
[environments.staging.verify]
timeout_s = 5
retries = 0
[environments.staging.verify.smoke.release]
base_url = "{base}"
{text}""",
    )
    return load_settings(config).environment("staging")


def _smoke(env: Environment) -> list:
    report = verify_environment(env, performance=False)
    return [r for r in report.results if r.kind == "smoke"], report


def test_sequence_passes_against_the_sample_service(tmp_path: Path, pg_database: str, service: str) -> None:
    env = smoke_config(tmp_path, pg_database, service)
    assert "ULTRA_TEST_SMOKE_PASSWORD" in env.secret_env_names()
    # Guarded by only_if_env: unset, authentication is off and the deploy's checklist does not ask for it.
    assert "ULTRA_TEST_SMOKE_PASSWORD" not in env.required_secret_env_names()
    results, report = _smoke(env)
    assert report.ok, report.table()
    assert [r.name.removeprefix("smoke release: ") for r in results] == [
        "log in",
        "protected endpoint",
        "metrics before",
        "test prompt",
        "upload",
        "metrics moved",
    ]
    assert all(r.ok and not r.skipped and r.metrics["latency_ms"] > 0 for r in results)
    prompt = next(r for r in results if r.name.endswith("test prompt"))
    assert prompt.latency_ms >= LLM_DELAY_S * 1000  # the answer came from the stand-in, over HTTP
    assert PASSWORD not in json.dumps(report.to_dict())


def test_without_the_password_the_login_is_skipped(
    tmp_path: Path, pg_database: str, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ULTRA_TEST_SMOKE_PASSWORD")
    env = smoke_config(tmp_path, pg_database, service)
    results, _report = _smoke(env)
    login, me = results[0], results[1]
    assert login.skipped and "ULTRA_TEST_SMOKE_PASSWORD is not set" in login.detail
    # The bearer header is left out, and this service has authentication on: the step says so.
    assert not me.ok and me.detail.startswith("expected status 200, got 401")


@pytest.mark.parametrize(
    ("overrides", "step", "reason"),
    [
        (
            {"protected endpoint.expect_json": '{ user = "someone-else" }'},
            "protected endpoint",
            "field user is 'admin', expected 'someone-else'",
        ),
        ({"upload.expect_status": "200"}, "upload", "expected status 200, got 201"),
        ({"test prompt.max_latency_ms": "100"}, "test prompt", "slow: "),
        ({"log in.expect_json": '{ token_type = "bearer", token = "not-this" }'}, "log in", "field token is '***'"),
    ],
)
def test_a_failing_step_is_named_with_its_reason_and_no_secret(
    tmp_path: Path, pg_database: str, service: str, overrides: dict, step: str, reason: str
) -> None:
    env = smoke_config(tmp_path, pg_database, service, **overrides)
    results, report = _smoke(env)
    assert not report.ok
    (failed,) = report.failures
    assert failed.name == f"smoke release: {step}"
    assert failed.detail.startswith(reason), failed.detail
    assert f"smoke release: {step} ({reason}" in report.summary()
    # The steps after it are not run (they depend on it), and say why.
    after = results[[r.name for r in results].index(failed.name) + 1 :]
    assert all(r.skipped and r.detail == f"not run: {step} failed" for r in after)
    text = json.dumps(report.to_dict()) + report.table()
    assert PASSWORD not in text
    token = httpx.post(service + "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}).json()
    assert token["token"] not in text and token["token"][:20] not in text


@pytest.mark.unit
def test_prometheus_counters_are_read_by_name_and_labels() -> None:
    text = (
        "# TYPE ultra_http_requests_total counter\n"
        'ultra_http_requests_total{path="/metrics",status="200"} 3\n'
        'ultra_http_requests_total{path="/api/v1/prompt",status="200"} 2\n'
        "ultra_prompts_total 5\n"
    )
    assert metric_value(text, "ultra_http_requests_total") == 5
    assert metric_value(text, 'ultra_http_requests_total{path="/api/v1/prompt"}') == 2
    assert metric_value(text, "ultra_prompts_total") == 5
    assert metric_value(text, "ultra_missing_total") is None


def test_the_shipped_verification_passes_on_a_deployed_release(
    tmp_path: Path, pg_database: str, redis_prefix: str, dagster_home: Path, monkeypatch, capsys
) -> None:
    """The shipped ultra_ops.toml's staging, moved to free ports, a test database and folders: its
    smoke steps (authentication on, with the password `init` wrote), performance verification under
    the rate limit, and window, on a real deploy."""
    from ultra_ops.cli import main
    from ultra_ops_tests.support.services import REPO

    backend, llm = free_port(), free_port()
    text = (REPO / "ultra_ops.toml").read_text()
    text = text[: text.index("# production:")]  # development and staging
    text = text.replace("8001", str(backend)).replace("8011", str(llm))
    for old, new in (
        ('"var/', f'"{tmp_path}/var/'),
        ('"ultra_ops/sample_service', f'"{REPO}/ultra_ops/sample_service'),
        ('name = "ultra_staging"', f'name = "{pg_database}"'),
        ('user = "postgres"', f'user = "{PG["user"]}"'),
        ('"uploads" }', f'"uploads", ULTRA_REDIS_PREFIX = "{redis_prefix}" }}'),
        ("interval_s = 15", "interval_s = 1"),
    ):
        text = text.replace(old, new)
    # The shipped budgets are for the shipped machine; here only that every part runs and passes
    # counts (speed is measured in bench/), so they get room for a loaded test machine.
    text = re.sub(r"(p50_ms|p95_ms|max_ms) = \d+", r"\1 = 10000", text)
    config = tmp_path / "ultra_ops.toml"
    config.write_text(text)
    args = ["--environment", "staging", "--config", str(config)]
    try:
        assert main(["init", *args]) == 0  # writes a login password and a rate limit into the env file
        password = read_env_file(load_settings(config).environment("staging").env_file)["ULTRA_AUTH_PASSWORD"]
        assert main(["deploy", "--tag", "v1.0.0", *args]) == 0
        capsys.readouterr()
        assert main(["verify", "--json", *args]) == 0
        report = json.loads(capsys.readouterr().out)
    finally:
        from ultra_ops.engine.runtimes import get_runtime

        get_runtime(load_settings(config).environment("staging")).down()
    results = {r["name"]: r for r in report["results"]}
    smoke = [r for r in report["results"] if r["kind"] == "smoke"]
    assert len(smoke) == 6 and all(r["ok"] and not r["skipped"] for r in smoke), smoke
    assert {
        "latency prompts",
        "latency version",
        "resources backend",
        "resources llm",
        "disk data",
        "database connections",
        "llm completion stand-in",
        "llm stand-in",
    } <= set(results)
    assert all(results[n]["metrics"]["p95_ms"] > 0 for n in ("latency prompts", "latency version"))
    assert results["slowest statements"]["skipped"]  # this server does not preload pg_stat_statements
    assert results["smoke release: log in"]["detail"].startswith("200")  # authentication on: a real login
    assert all(r["metrics"]["errors"] == 0 for r in report["results"] if r["kind"] == "latency")  # no 429
    assert password not in json.dumps(report)
