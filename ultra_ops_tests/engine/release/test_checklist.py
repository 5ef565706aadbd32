"""The pre-release checklist: every item passing on a good set-up, and failing on one built to fail it,
against the sample service (login, protected endpoint, rate limit, /metrics), PostgreSQL, an LLM
stand-in and git repositories made here."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ultra_ops.cli import main
from ultra_ops.engine.release.checklist import on_main_item
from ultra_ops.engine.release.records import find_releases
from ultra_ops.sample_service.llm_standin import make_server
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.repos import git, make_repo
from ultra_ops_tests.support.stack import Stack

LLM_KEY = "sk-standin-9c1f7e2d4b"
PASSWORD = "pw-checklist-5d8e1a"
CRITICAL = ["Code quality", "Configuration", "Infrastructure", "Security"]


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch):
    port = free_port()
    server = make_server(port, api_key=LLM_KEY)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ULTRA_TEST_LLM_KEY", LLM_KEY)
    monkeypatch.setenv("ULTRA_TEST_LLM_WRONG_KEY", "sk-not-the-standin-key")
    yield f"http://127.0.0.1:{port}/v1/models"
    server.shutdown()
    server.server_close()


def _scan(tmp_path: Path, name: str, report: dict) -> str:
    """A stand-in for `pip-audit -f json`: prints the report and exits 1 when it lists a vulnerability."""
    script = tmp_path / f"{name}.py"
    found = any(dep["vulns"] for dep in report["dependencies"])
    script.write_text(f"import json, sys\nprint(json.dumps({report!r}))\nsys.exit({int(found)})\n")
    return json.dumps([sys.executable, str(script)])


def _checklist(config: Path, *extra: str, capsys) -> tuple[int, dict[str, dict]]:
    capsys.readouterr()
    code = main(["checklist", "--environment", "staging", "--config", str(config), "--json", *extra])
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert [i["section"] for i in report["items"]] == sorted(
        (i["section"] for i in report["items"]), key=CRITICAL.index
    )
    return code, {i["name"]: i for i in report["items"]}


def test_every_item_passes_on_a_good_setup_and_fails_on_a_bad_one(
    tmp_path: Path, pg_database: str, dagster_home: Path, llm: str, capsys
) -> None:
    repo, _ = make_repo(tmp_path)
    bugs = tmp_path / "bugs.json"
    bugs.write_text(
        json.dumps(
            {
                "issues": [
                    {"title": "login page typo", "severity": "low", "state": "open"},
                    {"title": "crash on empty prompt", "labels": [{"name": "critical"}], "state": "closed"},
                ]
            }
        )
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    good_scan = _scan(
        tmp_path,
        "scan_good",
        {
            "dependencies": [
                {"name": "httpx", "version": "0.28.1", "vulns": []},
                {"name": "left-pad", "version": "1.3.0", "vulns": [{"id": "GHSA-low-1", "severity": "low"}]},
            ]
        },
    )
    checklist = (
        f'checklist = {{ critical_bugs = "{bugs}", feature_flags = ["ULTRA_FEATURE_FLAGS"], '
        f'metrics_url = "{base}/metrics", protected_url = "{base}/api/v1/me", '
        f'login_url = "{base}/api/v1/auth/login", rate_limit_url = "{base}/api/v1/version", '
        f"rate_limit_burst = 40, dependency_scan = {good_scan}, timeout_s = 5 }}"
    )
    extra = (
        f'git_repo = "{repo}"\ntest_command = ["{sys.executable}", "-c", "print(\'12 passed\')"]\n'
        f'llm_providers = [{{ name = "standin", models_url = "{llm}", api_key_env = "ULTRA_TEST_LLM_KEY" }}]\n'
        + checklist
    )
    stack = Stack(tmp_path, pg_database, extra=extra)
    # Stack picked its own port: the checklist's URLs follow it.
    stack.config.write_text(stack.config.read_text().replace(base, f"http://127.0.0.1:{stack.port}"))
    # 10 per 10 s: the checklist's sequential burst meets the limit even on a machine so busy that
    # a request takes most of a second.
    stack.env.env_file.write_text(
        f"ULTRA_FEATURE_FLAGS=search\nULTRA_VERSION=\nULTRA_AUTH_PASSWORD={PASSWORD}\nULTRA_RATE_LIMIT=10/10\n"
    )
    try:
        assert main(["release-branch", "--tag", "v1.1.0", "--config", str(stack.config)]) == 0
        # The deploy runs the same checklist as its blocking second step; nothing runs yet, so the
        # service's endpoints are "not checked" (warn), and the test command runs once, there.
        assert stack.ops("deploy", "--tag", "v1.1.0") == 0
        err = capsys.readouterr().err
        assert "[PASS] automated tests pass" in err and "12 passed" in err
        assert "passed in the pre-release checklist of this run: not run twice" in err
        assert "[WARN] authentication refuses anonymous, accepts a login: not checked" in err
        # The release record keeps the release branch's commit (staging does not tag: no tag yet).
        (record,) = find_releases(stack.env)
        assert (record.version, record.commit) == ("v1.1.0", git(repo, "rev-parse", "release/v1.1.0"))
        assert git(repo, "tag") == ""

        code, items = _checklist(stack.config, "--tag", "v1.1.0", capsys=capsys)
        assert code == 0, {name: item for name, item in items.items() if item["status"] != "pass"}
        statuses = {name: item["status"] for name, item in items.items()}
        assert statuses.pop("code reviewed and approved") == "warn"  # nobody can know: it says so
        assert set(statuses.values()) == {"pass"}, items
        assert len(items) == 20
        evidence = {name: item["evidence"] for name, item in items.items()}
        assert "12 passed" in evidence["automated tests pass"]
        assert "none open in" in evidence["no known critical bugs"]
        assert "CHANGELOG.md at release/v1.1.0 line 3: ## 1.1.0" in evidence["changelog or docs name the version"]
        assert "plus release/v1.1.0's version commit" in evidence["release commit is on main"]
        llm_evidence = evidence["LLM provider keys valid, with quota"]
        assert "standin: key accepted, requests 99" in llm_evidence and "remaining" in llm_evidence
        assert "ULTRA_FEATURE_FLAGS=search" in evidence["feature flags set"]
        assert "MB available" in evidence["memory available"] and "MB free" in evidence["disk space"]
        assert "h old (limit 26 h)" in evidence["fresh backup of the current state"]
        assert "/metrics: 200" in evidence["metrics endpoint answers"]
        assert "connections in use" in evidence["database healthy, with connection and size headroom"]
        assert "1 lower: left-pad 1.3.0 GHSA-low-1 (low)" in evidence["dependency scan finds no critical vulnerability"]
        assert ".env.staging 0600" in evidence["env files not readable by others"]
        auth = evidence["authentication refuses anonymous, accepts a login"]
        assert "anonymous 401" in auth and "login as admin 200" in auth and "with its token 200" in auth
        assert "limited after" in evidence["rate limiting enabled"]
        assert PASSWORD not in json.dumps(items) and LLM_KEY not in json.dumps(items)
        # Once production tagged the release, the tag names the same commit: still main plus its version.
        git(repo, "tag", "-a", "v1.1.0", "-m", "Release v1.1.0", "release/v1.1.0")
        tagged = on_main_item(stack.env, "v1.1.0")
        assert tagged.status == "pass" and tagged.evidence.startswith("v1.1.0 "), tagged

        bad = _bad_config(tmp_path, stack, repo)
        code, items = _checklist(bad, "--tag", "v1.2.0", capsys=capsys)
        assert code == 1
        statuses = {name: item["status"] for name, item in items.items()}
        assert statuses.pop("code reviewed and approved") == "warn"
        assert set(statuses.values()) == {"fail"}, {n: i for n, i in items.items() if i["status"] != "fail"}
        evidence = {name: item["evidence"] for name, item in items.items()}
        assert "exited 3" in evidence["automated tests pass"]
        bugs_evidence = evidence["no known critical bugs"]
        assert "1 open critical" in bugs_evidence and "data loss on restore" in bugs_evidence
        assert "no mention of v1.2.0" in evidence["changelog or docs name the version"]
        assert "2 commit(s) that are not on main" in evidence["release commit is on main"]
        assert "ULTRA_SECRET_SAUCE" in evidence["environment variables set"]
        assert "does not exist" in evidence["database migrations prepared"]
        assert "key rejected (401)" in evidence["LLM provider keys valid, with quota"]
        assert "ULTRA_FEATURE_BETA" in evidence["feature flags set"]
        assert "limit 0.0001 h" in evidence["fresh backup of the current state"]
        assert "ConnectError" in evidence["health endpoints answer"]
        assert "404" in evidence["metrics endpoint answers"]
        db = evidence["database healthy, with connection and size headroom"]
        assert "connections" in db and "over 1 MB" in db
        assert "PYSEC-2026-1" in evidence["dependency scan finds no critical vulnerability"]
        assert "wider than 0600" in evidence["env files not readable by others"]
        assert "tracked by git" in evidence["env files not tracked by git"]
        assert "without credentials answered 200" in evidence["authentication refuses anonymous, accepts a login"]
        assert "never limited" in evidence["rate limiting enabled"]
        assert PASSWORD not in json.dumps(items) and LLM_KEY not in json.dumps(items)
    finally:
        stack.stop()


def _bad_config(tmp_path: Path, stack: Stack, repo: Path) -> Path:
    """The same environment, configured and set up so that every item fails."""
    # A release branch whose commits are not main's, with a changelog that does not name it.
    git(repo, "checkout", "-q", "-b", "feature/unreviewed", "main")
    for n in (1, 2):
        git(repo, "commit", "-q", "--allow-empty", "-m", f"unreviewed {n}")
    git(repo, "branch", "release/v1.2.0", "feature/unreviewed")
    git(repo, "checkout", "-q", "main")
    bugs = tmp_path / "bugs_bad.json"
    bugs.write_text(json.dumps([{"title": "data loss on restore", "severity": "critical"}]))
    scan = _scan(
        tmp_path,
        "scan_bad",
        {
            "dependencies": [
                {"name": "jinja2", "version": "2.0", "vulns": [{"id": "PYSEC-2026-1", "fix_versions": ["3.1.5"]}]}
            ]
        },
    )
    base = f"http://127.0.0.1:{stack.port}"
    # The env file readable by others, and tracked in a git repository around the environment's root.
    stack.env.env_file.chmod(0o644)
    subprocess.run(["git", "init", "-q", str(stack.env.root)], check=True, timeout=30)
    git(stack.env.root, "add", "-f", stack.env.env_file.name)
    text = stack.config.read_text()
    start = text.index("checklist = {")
    end = text.index("\n", start)
    text = (
        text[:start]
        + (
            f'checklist = {{ critical_bugs = "{bugs}", feature_flags = ["ULTRA_FEATURE_FLAGS", "ULTRA_FEATURE_BETA"], '
            f'metrics_url = "{base}/no-metrics-here", protected_url = "{base}/health", '
            f'login_url = "{base}/api/v1/auth/login", rate_limit_url = "{base}/metrics", rate_limit_burst = 30, '
            f"dependency_scan = {scan}, min_free_memory_mb = 100000000, max_connections_used_pct = 0.001, "
            "max_database_mb = 1 }\nmin_free_disk_mb = 1000000000\n"
        )
        + text[end + 1 :]
    )
    text = text.replace(
        'required_env_keys = ["ULTRA_VERSION"]', 'required_env_keys = ["ULTRA_VERSION", "ULTRA_SECRET_SAUCE"]'
    )
    text = text.replace("\"print('12 passed')\"", "\"import sys; print('2 failed'); sys.exit(3)\"")
    text = text.replace("ULTRA_TEST_LLM_KEY", "ULTRA_TEST_LLM_WRONG_KEY")
    text = text.replace(f'migrations = "{stack.migrations}"', f'migrations = "{tmp_path / "no-migrations"}"')
    text = text.replace(
        f'health_urls = ["{base}/health?detail=true"]', f'health_urls = ["http://127.0.0.1:{free_port()}/health"]'
    )
    text = text.replace("[environments.staging.backup]\n", "[environments.staging.backup]\nmax_age_hours = 0.0001\n")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    return bad


def test_init_gives_the_service_what_the_checklist_tests(tmp_path: Path, pg_database: str, capsys) -> None:
    from ultra_ops.engine.envfile import read_env_file
    from ultra_ops.engine.settings import load_settings
    from ultra_ops_tests.support.configs import write_config

    extra = (
        'checklist = { protected_url = "http://127.0.0.1:1/api/v1/me", '
        'rate_limit_url = "http://127.0.0.1:1/api/v1/version", rate_limit_burst = 40 }'
    )
    config = write_config(tmp_path, pg_database, extra=extra)
    assert main(["init", "--environment", "staging", "--config", str(config)]) == 0
    env = load_settings(config).environment("staging")
    values = read_env_file(env.env_file)
    password = values["ULTRA_AUTH_PASSWORD"]
    assert len(password) >= 24 and values["ULTRA_RATE_LIMIT"] == "20/1"  # the burst of 40 meets it
    assert password not in capsys.readouterr().out
    assert main(["init", "--environment", "staging", "--config", str(config)]) == 0
    assert read_env_file(env.env_file)["ULTRA_AUTH_PASSWORD"] == password  # made once, then left alone
