"""verify_environment against real PostgreSQL, real Redis and real HTTP servers on loopback."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops.engine.verify.report import CheckResult, VerifyReport
from ultra_ops.engine.verify.runner import verify_environment
from ultra_ops_tests.support.peers import MODELS, Route, fixed, openai_models
from ultra_ops_tests.support.peers import HttpPeer as _Server
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG, REDIS_URL


@pytest.fixture
def http_server() -> Iterator[Callable[[dict[str, Route]], _Server]]:
    servers: list[_Server] = []

    def start(routes: dict[str, Route]) -> _Server:
        servers.append(_Server(routes))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


HEALTHY = {"status": "ok", "checks": {"postgres": {"status": "ok"}, "redis": {"status": "ok"}}}


def make_env(
    tmp_path: Path,
    database: str,
    *,
    health_urls: tuple[str, ...] = (),
    verify: str = "",
    extra: str = "",
    redis_table: str | None = f'url = "{REDIS_URL}"',
    timeout_s: float = 2,
    retries: int = 1,
    backoff_s: float = 0.05,
    db_extra: str = "",
    probe_queries: tuple[str, ...] = ("SELECT 1", "SELECT count(*) FROM pg_class"),
) -> Environment:
    """Write a config whose staging environment checks exactly what the test names, and load it."""
    redis_section = f"[environments.staging.redis]\n{redis_table}\n" if redis_table is not None else ""
    text = f"""
timezone = "UTC"

[environments.staging]
runtime = "process"
root = "{tmp_path / "root"}"
state_dir = "{tmp_path / "state"}"
{extra}

[environments.staging.database]
host = "127.0.0.1"
port = 5432
name = "{database}"
user = "{PG["user"]}"
probe_queries = {json.dumps(list(probe_queries))}
{db_extra}

{redis_section}
[environments.staging.processes.backend]
command = ["true"]

[environments.staging.verify]
timeout_s = {timeout_s}
retries = {retries}
backoff_s = {backoff_s}
health_urls = {json.dumps(list(health_urls))}

{verify}
"""
    (tmp_path / "root").mkdir(exist_ok=True)
    path = tmp_path / "ultra_ops.toml"
    path.write_text(text)
    return load_settings(path).environment("staging")


def endpoint(name: str, url: str, *, status: int = 200, budget: float | None = None, method: str = "GET") -> str:
    budget_line = f"latency_budget_ms = {budget}\n" if budget is not None else ""
    return (
        f'[[environments.staging.verify.endpoints]]\nname = "{name}"\nurl = "{url}"\n'
        f'method = "{method}"\nexpect_status = {status}\n{budget_line}\n'
    )


def by_name(report: VerifyReport) -> dict[str, CheckResult]:
    return {r.name: r for r in report.results}


class ListLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str) -> None:
        self.lines.append(("info", msg))

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))


def everything_said(report: VerifyReport, log: ListLog) -> str:
    return "\n".join([report.to_json(), report.table(), report.summary(), *(m for _, m in log.lines)])


def test_all_ok(tmp_path: Path, pg_database: str, http_server) -> None:
    srv = http_server(
        {"/health": fixed(200, HEALTHY), "/api/prompts": fixed(200, {"items": []}), "/api/jobs": fixed(201, {})}
    )
    env = make_env(
        tmp_path,
        pg_database,
        health_urls=(srv.url("/health?detail=true"),),
        verify=endpoint("prompts", srv.url("/api/prompts"), budget=1000)
        + endpoint("jobs", srv.url("/api/jobs"), status=201, method="POST"),
    )
    log = ListLog()
    report = verify_environment(env, log=log)
    assert report.ok, report.table()
    names = [r.name for r in report.results]
    assert names == [
        f"health {srv.url('/health?detail=true')}",
        "database",
        "redis",
        "endpoint prompts",
        "endpoint jobs",
    ]
    assert all(r.attempts == 1 for r in report.results)
    assert by_name(report)["endpoint prompts"].detail.startswith("200 in ")
    assert by_name(report)["endpoint jobs"].detail.startswith("201 in ")
    assert by_name(report)["database"].kind == "database"
    assert len(log.lines) == 5 and all(level == "info" for level, _ in log.lines)
    assert report.summary().startswith("all 5 checks passed")
    data = json.loads(report.to_json())
    assert data["ok"] is True and data["environment"] == "staging" and len(data["results"]) == 5
    assert data["started_at"].endswith("Z")
    table = report.table().splitlines()
    assert table[0].split() == ["CHECK", "KIND", "STATUS", "LATENCY", "ATTEMPTS", "DETAIL"]
    # Columns line up: every row has its KIND where the header has it.
    kind_col = table[0].index("KIND")
    assert all(line[kind_col:].split()[0] in {"health", "database", "redis", "endpoint"} for line in table[1:6])


def test_failures_are_results(tmp_path: Path, pg_database: str, http_server) -> None:
    degraded = {"status": "degraded", "checks": {"postgres": {"status": "ok"}, "redis": {"status": "down"}}}
    srv = http_server(
        {
            "/health": fixed(200, degraded),
            "/h2": fixed(503, "busy"),
            "/api/prompts": fixed(500, {"error": "boom"}),
            "/slow": fixed(200, {}, 0.3),
        }
    )
    env = make_env(
        tmp_path,
        pg_database,
        health_urls=(srv.url("/health"), srv.url("/h2")),
        verify=endpoint("prompts", srv.url("/api/prompts")) + endpoint("slow", srv.url("/slow"), budget=100),
    )
    log = ListLog()
    report = verify_environment(env, log=log)
    assert not report.ok
    r = by_name(report)
    assert r["endpoint prompts"].detail == "expected 200, got 500"
    assert r["endpoint prompts"].attempts == 2  # retries = 1: a failure is tried again
    assert srv.hits["/api/prompts"] == 2
    slow = r["endpoint slow"].detail
    assert slow.startswith("latency ") and slow.endswith("over budget 100 ms")
    assert r["endpoint slow"].latency_ms >= 300
    assert r[f"health {srv.url('/health')}"].detail == "status degraded; not ok: redis (down)"
    assert r[f"health {srv.url('/h2')}"].detail == "expected 200, got 503"
    assert r["database"].ok and r["redis"].ok
    assert {f.name for f in report.failures} == {
        "endpoint prompts",
        "endpoint slow",
        f"health {srv.url('/health')}",
        f"health {srv.url('/h2')}",
    }
    assert report.summary().startswith("4 of 6 checks failed: ")
    assert "endpoint prompts (expected 200, got 500)" in report.summary()
    assert sum(level == "warning" for level, _ in log.lines) == 4
    assert "FAIL" in report.table()


def test_hanging_endpoint_times_out_and_is_retried(tmp_path: Path, pg_database: str, http_server) -> None:
    srv = http_server({"/hang": fixed(200, {}, 10.0)})
    env = make_env(
        tmp_path, pg_database, timeout_s=0.4, retries=2, backoff_s=0.05, verify=endpoint("hang", srv.url("/hang"))
    )
    start = time.perf_counter()
    report = verify_environment(env)
    elapsed = time.perf_counter() - start
    hang = by_name(report)["endpoint hang"]
    assert not hang.ok and hang.detail == "timeout after 0.4s"
    assert hang.attempts == 3
    assert srv.hits["/hang"] == 3
    assert 0.4 <= hang.latency_ms / 1000 < 1.5
    # 3 × 0.4 s plus backoffs 0.05 + 0.1 s; nowhere near the server's 10 s.
    assert 1.3 <= elapsed < 3.0


def test_nothing_listening_fails_fast(tmp_path: Path, pg_database: str) -> None:
    env = make_env(tmp_path, pg_database, retries=0, verify=endpoint("gone", f"http://127.0.0.1:{free_port()}/x"))
    gone = by_name(verify_environment(env))["endpoint gone"]
    assert not gone.ok and gone.detail.startswith("cannot connect") and gone.attempts == 1


def _llm_routes(key: str) -> dict[str, Route]:
    # The OpenAI-style peer echoes the key it refused; it must still not reach the report.
    openai = openai_models(key)

    def anthropic(headers: dict[str, str]) -> tuple[int, object, float]:
        if headers.get("anthropic-version") != "2023-06-01":
            return 400, {"error": "anthropic-version header is required"}, 0
        return (200, MODELS, 0) if headers.get("x-api-key") == key else (403, {"error": "forbidden"}, 0)

    return {
        "/v1/models": openai,
        "/anthropic/v1/models": anthropic,
        "/empty/v1/models": lambda h: (200, {"data": []}, 0),
    }


def _providers(srv: _Server) -> str:
    text = ""
    for name, path, var, auth in [
        ("openai", "/v1/models", "UO_TEST_OPENAI_KEY", "bearer"),
        ("openai-wrong", "/v1/models", "UO_TEST_WRONG_KEY", "bearer"),
        ("openai-unset", "/v1/models", "UO_TEST_UNSET_KEY", "bearer"),
        ("anthropic", "/anthropic/v1/models", "UO_TEST_OPENAI_KEY", "x-api-key"),
        ("anthropic-wrong", "/anthropic/v1/models", "UO_TEST_WRONG_KEY", "x-api-key"),
        ("empty", "/empty/v1/models", "UO_TEST_OPENAI_KEY", "bearer"),
    ]:
        text += (
            f'[[environments.staging.llm_providers]]\nname = "{name}"\nmodels_url = "{srv.url(path)}"\n'
            f'api_key_env = "{var}"\nauth = "{auth}"\n\n'
        )
    return text


def test_llm_providers(tmp_path: Path, pg_database: str, http_server, monkeypatch) -> None:
    key, wrong = f"sk-right-{uuid.uuid4().hex}", f"sk-wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("UO_TEST_OPENAI_KEY", key)
    monkeypatch.setenv("UO_TEST_WRONG_KEY", wrong)
    monkeypatch.delenv("UO_TEST_UNSET_KEY", raising=False)
    srv = http_server(_llm_routes(key))
    # An array-of-tables header may follow the verify table: TOML files it under the environment.
    env = make_env(tmp_path, pg_database, redis_table=None, verify=_providers(srv))
    log = ListLog()
    report = verify_environment(env, log=log)
    r = by_name(report)
    assert r["llm openai"].ok and r["llm openai"].detail.endswith("2 models"), r["llm openai"]
    assert r["llm anthropic"].ok, r["llm anthropic"]
    assert r["llm openai-wrong"].detail == "key rejected (401)"
    assert r["llm anthropic-wrong"].detail == "key rejected (403)"
    # A rejected key or a missing variable is not retried: it will not fix itself in 100 ms.
    assert r["llm openai-wrong"].attempts == 1 and r["llm anthropic-wrong"].attempts == 1
    assert r["llm openai-unset"].detail == "UO_TEST_UNSET_KEY is not set"
    assert r["llm empty"].detail == "answer lists no models"
    assert srv.hits["/v1/models"] == 2  # right + wrong key; the unset one never called
    said = everything_said(report, log)
    assert key not in said and wrong not in said


def test_secrets_masked_even_with_a_caller_redactor_that_misses_them(
    tmp_path: Path, pg_database: str, http_server, monkeypatch
) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("UO_TEST_OPENAI_KEY", key)
    # The server answers 500 with the key in its body, and a health URL carries it in its query,
    # so it is part of that check's name.
    srv = http_server({"/v1/models": fixed(500, {"echo": key}), "/api": fixed(418, "")})
    env = make_env(
        tmp_path,
        pg_database,
        redis_table=None,
        health_urls=(srv.url(f"/api?token={key}"),),
        verify=endpoint("leaky", srv.url(f"/api?token={key}")) + '[[environments.staging.llm_providers]]\nname = "p"\n'
        f'models_url = "{srv.url("/v1/models")}"\napi_key_env = "UO_TEST_OPENAI_KEY"\n',
    )
    log = ListLog()
    report = verify_environment(env, redact=Redactor(), log=log)
    said = everything_said(report, log)
    assert not report.ok
    assert key not in said and f"health http://127.0.0.1:{srv.port}/api?token=***" in said


def test_database_missing_fails(tmp_path: Path, pg_database: str) -> None:
    env = make_env(tmp_path, f"{pg_database}_missing", redis_table=None)
    report = verify_environment(env)
    db = by_name(report)["database"]
    assert not db.ok and db.attempts == 2
    assert "does not exist" in db.detail
    assert not report.ok


def test_database_latency_budget(tmp_path: Path, pg_database: str) -> None:
    env = make_env(
        tmp_path,
        pg_database,
        redis_table=None,
        retries=0,
        probe_queries=("SELECT pg_sleep(0.2)",),
        db_extra="latency_budget_ms = 50",
    )
    db = by_name(verify_environment(env))["database"]
    assert not db.ok and db.detail.startswith("latency ") and db.detail.endswith("over budget 50 ms")


@pytest.fixture
def redis_user() -> Iterator[tuple[str, str]]:
    name, password = f"uo_test_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    admin = redis.Redis.from_url(REDIS_URL)
    admin.execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "+@all")
    yield name, password
    admin.execute_command("ACL", "DELUSER", name)
    admin.close()


def test_redis_acl_user(tmp_path: Path, pg_database: str, redis_user, monkeypatch) -> None:
    user, password = redis_user
    table = f'url = "{REDIS_URL}"\nusername = "{user}"\npassword_env = "UO_TEST_REDIS_PW"'
    env = make_env(tmp_path, pg_database, redis_table=table)

    monkeypatch.setenv("UO_TEST_REDIS_PW", password)
    log = ListLog()
    ok = verify_environment(env, log=log)
    assert by_name(ok)["redis"].ok and by_name(ok)["redis"].detail.startswith("PONG in ")
    assert password not in everything_said(ok, log)

    wrong = f"pw-wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("UO_TEST_REDIS_PW", wrong)
    log = ListLog()
    bad = verify_environment(env, log=log)
    r = by_name(bad)["redis"]
    assert not r.ok and r.detail == "authentication failed" and r.attempts == 1
    said = everything_said(bad, log)
    assert wrong not in said and password not in said

    monkeypatch.delenv("UO_TEST_REDIS_PW")
    r = by_name(verify_environment(env))["redis"]
    assert not r.ok and r.detail == "UO_TEST_REDIS_PW is not set"


def test_redis_unreachable(tmp_path: Path, pg_database: str) -> None:
    env = make_env(tmp_path, pg_database, retries=0, redis_table=f'url = "redis://127.0.0.1:{free_port()}/0"')
    r = by_name(verify_environment(env))["redis"]
    assert not r.ok and r.attempts == 1 and r.detail


def test_checks_run_concurrently(tmp_path: Path, pg_database: str, http_server) -> None:
    srv = http_server({f"/e{i}": fixed(200, {}, 0.3) for i in range(10)})
    env = make_env(
        tmp_path, pg_database, redis_table=None, verify="".join(endpoint(f"e{i}", srv.url(f"/e{i}")) for i in range(10))
    )
    start = time.perf_counter()
    report = verify_environment(env)
    elapsed = time.perf_counter() - start
    assert report.ok, report.table()
    assert elapsed < 1.5, f"10 × 0.3 s checks took {elapsed:.2f} s"
    assert report.duration_ms / 1000 <= elapsed


def test_logs_go_to_a_standard_logger(tmp_path: Path, pg_database: str, caplog) -> None:
    env = make_env(tmp_path, pg_database, redis_table=None)
    with caplog.at_level(logging.INFO, logger="uo.verify.test"):
        report = verify_environment(env, log=logging.getLogger("uo.verify.test"))
    assert report.ok
    assert [rec.getMessage().split(":")[1].strip() for rec in caplog.records] == ["database"]


def test_health_body_variants(tmp_path: Path, pg_database: str, http_server) -> None:
    srv = http_server(
        {
            "/plain": fixed(200, "OK"),
            "/spring": fixed(200, {"status": "UP", "components": {"db": {"status": "UP"}, "cache": False}}),
            "/flat": fixed(200, {"status": "ok", "checks": {"postgres": "ok", "llm": "timeout"}}),
        }
    )
    env = make_env(
        tmp_path, pg_database, redis_table=None, health_urls=(srv.url("/plain"), srv.url("/spring"), srv.url("/flat"))
    )
    r = by_name(verify_environment(env))
    assert r[f"health {srv.url('/plain')}"].ok
    assert r[f"health {srv.url('/spring')}"].detail == "not ok: cache (False)"
    assert r[f"health {srv.url('/flat')}"].detail == "not ok: llm (timeout)"


@pytest.mark.unit
def test_report_round_trips_through_its_dict() -> None:
    report = VerifyReport(
        environment="staging",
        results=(
            CheckResult("database", "database", True, 12.34, 1, "connect and 1 query in 12 ms"),
            CheckResult("endpoint chat", "endpoint", False, 1500.06, 3, "expected 200, got 503"),
        ),
        started_at="2024-05-01T12:00:00.000Z",
        duration_ms=1520.44,
    )
    rebuilt = VerifyReport.from_dict(json.loads(report.to_json()))
    assert rebuilt.to_dict() == report.to_dict()
    assert rebuilt.table() == report.table()
    assert not rebuilt.ok and [r.name for r in rebuilt.failures] == ["endpoint chat"]
