"""The pre-release checklist of the release document: every item of its four groups (code quality,
configuration, infrastructure, security) as a check that passes, warns or fails with the evidence
it saw.

Every item runs; the deploy is blocked when any item fails, and the operator sees all failures at
once rather than one per attempt. What a machine cannot know (a code review, open bugs without a
configured source) is a warning that says plainly it was not checked.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import CommandFailed, OperationError
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.release.branches import MAIN, RELEASE_VERSION
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.shell import run

httpx = lazy_module("httpx")

CODE, CONFIG, INFRA, SECURITY = "Code quality", "Configuration", "Infrastructure", "Security"
SECTIONS = (CODE, CONFIG, INFRA, SECURITY)
_GIT_TIMEOUT_S = 30.0
_SEVERE = ("critical",)


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class ChecklistItem:
    section: str  # the release document's heading
    name: str
    status: Status
    evidence: str

    @property
    def ok(self) -> bool:
        return self.status != Status.FAIL

    @property
    def detail(self) -> str:
        return self.evidence

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass(frozen=True)
class ChecklistReport:
    environment: str
    version: str | None
    items: list[ChecklistItem] = field(default_factory=list)

    @property
    def failures(self) -> list[ChecklistItem]:
        return [i for i in self.items if i.status == Status.FAIL]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        counts = {s: sum(1 for i in self.items if i.status == s) for s in Status}
        return (
            f"pre-release checklist of {self.environment} ({self.version or 'no version given'}): "
            f"{counts[Status.PASS]} pass, {counts[Status.WARN]} warn, {counts[Status.FAIL]} fail"
        )

    def table(self) -> str:
        lines = []
        for section in SECTIONS:
            lines.append(section)
            for item in (i for i in self.items if i.section == section):
                lines.append(f"  [{item.status.value.upper():<4}] {item.name}: {item.evidence}")
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "environment": self.environment,
            "version": self.version,
            "ok": self.ok,
            "items": [i.to_dict() for i in self.items],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ChecklistReport:
        items = [ChecklistItem(i["section"], i["name"], Status(i["status"]), i["evidence"]) for i in data["items"]]
        return cls(data["environment"], data.get("version"), items)


def _item(section: str, name: str, ok: bool, evidence: str, *, warn: bool = False) -> ChecklistItem:
    """Pass when ok; otherwise fail, or warn where a problem must not block."""
    return ChecklistItem(section, name, Status.PASS if ok else (Status.WARN if warn else Status.FAIL), evidence)


def _not_checked(section: str, name: str, why: str) -> ChecklistItem:
    return ChecklistItem(section, name, Status.WARN, f"not checked: {why}")


def _services_running(env: Environment) -> bool | None:
    """Whether the environment's services run (None: the runtime cannot tell)."""
    from ultra_ops.engine.runtimes import get_runtime

    try:
        statuses = get_runtime(env).status()
    except Exception:  # noqa: BLE001 - no docker here, or the runtime cannot answer: unknown, not a failure
        return None
    return any(s.running for s in statuses)


def _client(env: Environment) -> httpx.Client:
    return httpx.Client(timeout=env.checklist.timeout_s, follow_redirects=False)


def _git(repo: Path, *args: str) -> tuple[int, str]:
    done = run(["git", "-C", str(repo), *args], timeout=_GIT_TIMEOUT_S, check=False)
    return done.returncode, done.stdout


# Code quality -----------------------------------------------------------------------------------


def tests_item(env: Environment, version: str | None, redact: Redactor, *, skip: bool) -> ChecklistItem:
    from ultra_ops.engine.release.deploy import run_test_command

    name = "automated tests pass"
    if skip:
        return ChecklistItem(CODE, name, Status.WARN, "skipped (--skip-tests): not recommended for production")
    if not env.test_command:
        return _not_checked(CODE, name, f"no test_command configured for {env.name}")
    try:
        tail = run_test_command(env, version or "", redact)
    except CommandFailed as exc:
        return _item(CODE, name, False, redact(str(exc)))
    return _item(CODE, name, True, f"{' '.join(env.test_command)} exited 0" + (f": {tail}" if tail else ""))


def review_item() -> ChecklistItem:
    return _not_checked(
        CODE,
        "code reviewed and approved",
        "reviews happen in pull requests, which ultra_ops cannot see; release branches are "
        "made from main, where only reviewed pull requests merge",
    )


def _open_critical(data: Any) -> list[str]:
    """Titles of the open critical bugs in a list of issues ({"issues": [...]} or a list), each with
    `title`, `severity` or `labels`, and `state` (open when absent)."""
    issues = data.get("issues", data.get("bugs")) if isinstance(data, dict) else data
    if not isinstance(issues, list):
        raise ValueError('expected a list of issues (or {"issues": [...]})')
    found = []
    for issue in issues:
        if not isinstance(issue, dict):
            raise ValueError("every issue must be an object")
        labels = [str(x.get("name", x) if isinstance(x, dict) else x).lower() for x in issue.get("labels", [])]
        critical = str(issue.get("severity", "")).lower() in _SEVERE or any(s in labels for s in _SEVERE)
        if critical and str(issue.get("state", "open")).lower() == "open":
            found.append(str(issue.get("title") or issue.get("id") or "untitled"))
    return found


def critical_bugs_item(env: Environment, redact: Redactor) -> ChecklistItem:
    name = "no known critical bugs"
    source = env.checklist.critical_bugs
    if source is None:
        return _not_checked(
            CODE,
            name,
            "no critical_bugs source configured ([environments."
            f"{env.name}.checklist] critical_bugs = a JSON file or URL of open bugs)",
        )
    try:
        if source.startswith(("http://", "https://")):
            with _client(env) as client:
                response = client.get(source)
            if response.status_code != 200:
                return _item(CODE, name, False, f"{redact(source)} answered {response.status_code}")
            data = response.json()
        else:
            data = json.loads(Path(source).read_text())
        bugs = _open_critical(data)
    except (OSError, ValueError, httpx.HTTPError) as exc:
        return _item(CODE, name, False, redact(f"cannot read {source}: {type(exc).__name__}: {exc}"))
    if bugs:
        return _item(CODE, name, False, f"{len(bugs)} open critical in {redact(source)}: " + "; ".join(bugs[:5]))
    return _item(CODE, name, True, f"none open in {redact(source)}")


def _release_ref(env: Environment, version: str) -> str | None:
    """The git ref of release `version`: its tag, else its release branch."""
    assert env.git_repo is not None
    for ref in (f"refs/tags/{version}", f"refs/heads/release/{version}"):
        if _git(env.git_repo, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}")[0] == 0:
            return ref
    return None


def docs_item(env: Environment, version: str | None) -> ChecklistItem:
    name = "changelog or docs name the version"
    if env.git_repo is None or not env.git_repo.is_dir():
        return _not_checked(CODE, name, f"no git_repo folder for {env.name} ({env.git_repo or 'not configured'})")
    if not version:
        return _not_checked(CODE, name, "no version given (--tag)")
    if not RELEASE_VERSION.fullmatch(version):
        return _not_checked(CODE, name, f"{version} is not a release version vX.Y.Z (a development build)")
    if not env.checklist.docs:
        return _not_checked(CODE, name, "no docs configured ([checklist] docs)")
    ref = _release_ref(env, version)
    bare = version.removeprefix("v")
    looked: list[str] = []
    missing: list[str] = []
    for doc in env.checklist.docs:
        if ref is not None:
            code, text = _git(env.git_repo, "show", f"{ref}:{doc}")
            where = f"{doc} at {ref.removeprefix('refs/heads/').removeprefix('refs/tags/')}"
        else:
            path = env.git_repo / doc
            code, text = (0, path.read_text(errors="replace")) if path.is_file() else (1, "")
            where = f"{doc} in the working tree"
        if code != 0:
            missing.append(where)
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if version in line or bare in line.split() or f"[{bare}]" in line:
                return _item(CODE, name, True, f"{where} line {number}: {line.strip()[:100]}")
        looked.append(f"{where}: no mention of {version}")
    if not looked:
        return _not_checked(CODE, name, f"none of the docs exists: {', '.join(missing)}")
    return _item(CODE, name, False, "; ".join(looked + [f"{m}: missing" for m in missing]))


def on_main_item(env: Environment, version: str | None) -> ChecklistItem:
    name = "release commit is on main"
    if env.git_repo is None or not env.git_repo.is_dir():
        return _not_checked(CODE, name, f"no git_repo folder for {env.name} ({env.git_repo or 'not configured'})")
    if not version:
        return _not_checked(CODE, name, "no version given (--tag)")
    repo = env.git_repo
    ref = _release_ref(env, version)
    if ref is None:
        return _not_checked(
            CODE,
            name,
            f"no tag {version} and no branch release/{version} in {repo} (make one "
            f"with ultra-ops release-branch --tag {version})",
        )
    code, commit = _git(repo, "rev-parse", f"{ref}^{{commit}}")
    commit = commit.strip()
    if _git(repo, "merge-base", "--is-ancestor", commit, MAIN)[0] == 0:
        return _item(CODE, name, True, f"{commit[:12]} ({ref.split('/', 2)[2]}) is on {MAIN}")
    code, base = _git(repo, "merge-base", commit, MAIN)
    if code != 0:
        return _item(CODE, name, False, f"{commit[:12]} ({ref.split('/', 2)[2]}) shares no history with {MAIN}")
    # A release branch carries its version commit on top of main: what it adds must be only that.
    code, extra = _git(repo, "rev-list", "--count", f"{base.strip()}..{commit}")
    ahead = int(extra.strip() or 0)
    on_branch = _git(repo, "merge-base", "--is-ancestor", commit, f"refs/heads/release/{version}")[0] == 0
    if on_branch and ahead <= 1:
        return _item(
            CODE,
            name,
            True,
            f"{ref.split('/', 2)[2]} {commit[:12]} is {MAIN} {base.strip()[:12]} plus "
            f"release/{version}'s version commit",
        )
    return _item(
        CODE,
        name,
        False,
        f"{commit[:12]} ({ref.split('/', 2)[2]}) has {ahead} commit(s) that are not on "
        f"{MAIN} (forked at {base.strip()[:12]})",
    )


# Configuration ----------------------------------------------------------------------------------


def env_file_items(env: Environment) -> list[ChecklistItem]:
    path = env.env_file
    if not path.exists():
        return [
            _item(
                CONFIG,
                "environment variables set",
                False,
                f"{path} does not exist (ultra-ops init --environment {env.name} creates it)",
            )
        ]
    values = read_env_file(path)
    # ULTRA_VERSION is written by the deploy itself, so a first deploy must not need it.
    wanted = [k for k in env.required_env_keys if k != "ULTRA_VERSION"]
    missing = [k for k in wanted if not values.get(k)]
    # Not the optional ones: a password that switches authentication on, a smoke step's guarded secret.
    missing_env = [n for n in env.required_secret_env_names() if not os.environ.get(n)]
    evidence = (
        f"missing in {path.name}: {', '.join(missing)}"
        if missing
        else f"{path.name}: {', '.join(wanted)} set"
        if wanted
        else f"{path.name}: no key required besides ULTRA_VERSION (the deploy writes it)"
    )
    evidence += (
        f"; not set in ultra_ops's environment: {', '.join(missing_env)}"
        if missing_env
        else f"; {len(env.required_secret_env_names())} secret variables named by the config set"
    )
    return [_item(CONFIG, "environment variables set", not missing and not missing_env, evidence)]


def migrations_item(env: Environment, redact: Redactor) -> ChecklistItem:
    from ultra_ops.engine.release.migrate import pending_migrations

    name = "database migrations prepared"
    if env.migrations_dir is None:
        return _item(CONFIG, name, True, "no migrations folder configured")
    try:
        pending = pending_migrations(env)
    except Exception as exc:  # noqa: BLE001 - a bad file name or an unreachable database: both block
        return _item(CONFIG, name, False, redact(str(exc)))
    return _item(CONFIG, name, True, f"{len(pending)} pending" + (": " + ", ".join(pending) if pending else ""))


def _quota(headers: Any) -> dict[str, str]:
    return {
        k.lower().removeprefix("x-ratelimit-remaining-"): v
        for k, v in headers.items()
        if k.lower().startswith("x-ratelimit-remaining-")
    }


def llm_item(env: Environment, redact: Redactor) -> ChecklistItem:
    from ultra_ops.engine.verify.checks import ANTHROPIC_VERSION

    name = "LLM provider keys valid, with quota"
    if not env.llm_providers:
        return _item(CONFIG, name, True, "no LLM provider configured")
    found, failed, low = [], [], []
    with _client(env) as client:
        for p in env.llm_providers:
            if p.auth == "none":
                # A keyless provider (the environment's own LLM stand-in, which the deploy starts
                # later): no key to check and no quota to spend.
                found.append(f"{p.name}: keyless (auth = none), nothing to check")
                continue
            key = os.environ.get(p.api_key_env)
            if not key:
                failed.append(f"{p.name}: {p.api_key_env} is not set")
                continue
            headers = (
                {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
                if p.auth == "x-api-key"
                else {"Authorization": f"Bearer {key}"}
            )
            try:
                response = client.get(p.models_url, headers=headers)
            except httpx.HTTPError as exc:
                failed.append(f"{p.name}: {type(exc).__name__}")
                continue
            if response.status_code != 200:
                failed.append(
                    f"{p.name}: key rejected ({response.status_code})"
                    if response.status_code in (401, 403)
                    else f"{p.name}: answered {response.status_code}"
                )
                continue
            quota = _quota(response.headers)
            if not quota:
                found.append(f"{p.name}: key accepted, quota not reported")
                continue
            shown = ", ".join(f"{k} {v} remaining" for k, v in sorted(quota.items()))
            requests = quota.get("requests", "")
            if requests.isdigit() and int(requests) == 0:
                failed.append(f"{p.name}: quota exhausted ({shown})")
            elif requests.isdigit() and int(requests) < env.checklist.min_llm_requests_remaining:
                low.append(f"{p.name}: {shown} (below {env.checklist.min_llm_requests_remaining})")
            else:
                found.append(f"{p.name}: key accepted, {shown}")
    evidence = redact("; ".join(failed + low + found))
    if failed:
        return _item(CONFIG, name, False, evidence)
    return _item(CONFIG, name, not low, evidence, warn=True)


def feature_flags_item(env: Environment) -> ChecklistItem:
    name = "feature flags set"
    flags = env.checklist.feature_flags
    if not flags:
        return _item(CONFIG, name, True, "no feature flags named in the config")
    values = read_env_file(env.env_file)
    unset = [f for f in flags if not values.get(f)]
    if unset:
        return _item(CONFIG, name, False, f"not set in {env.env_file.name}: {', '.join(unset)}")
    # Flags are configuration, not secrets: their values are evidence.
    return _item(CONFIG, name, True, ", ".join(f"{f}={values[f]}" for f in flags))


# Infrastructure ---------------------------------------------------------------------------------


def disk_item(env: Environment) -> ChecklistItem:
    private_dir(env.backup_dir)
    free_mb = shutil.disk_usage(env.backup_dir).free // (1024 * 1024)
    return _item(
        INFRA,
        "disk space",
        free_mb >= env.min_free_disk_mb,
        f"{free_mb} MB free at {env.backup_dir} (minimum {env.min_free_disk_mb} MB)",
    )


def memory_item(env: Environment) -> ChecklistItem:
    name = "memory available"
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        available = int(info["MemAvailable"].split()[0]) // 1024
        total = int(info["MemTotal"].split()[0]) // 1024
    except (OSError, KeyError, ValueError):
        return _not_checked(INFRA, name, "/proc/meminfo cannot be read on this machine")
    need = env.checklist.min_free_memory_mb
    return _item(INFRA, name, available >= need, f"{available} MB available of {total} MB (minimum {need} MB)")


def backup_item(env: Environment, *, in_deploy: bool) -> ChecklistItem:
    from ultra_ops.engine.backups.store import list_backups
    from ultra_ops.engine.release.rollback import deployed_version

    name = "fresh backup of the current state"
    current = deployed_version(env)
    if current is None:
        return _item(INFRA, name, True, "nothing deployed yet: no state to back up")
    backups = list_backups(env)
    limit = env.backup.max_age_hours
    # A deploy takes its own backup two steps later: a stale one then warns instead of blocking.
    if not backups:
        return _item(
            INFRA,
            name,
            False,
            f"no backup of {env.name} ({current} is deployed)"
            + ("; deploy_backup takes one next" if in_deploy else ""),
            warn=in_deploy,
        )
    newest = backups[0]
    age_h = (datetime.now(UTC) - datetime.fromisoformat(newest.created_at)).total_seconds() / 3600
    evidence = f"newest {newest.id} ({newest.version or 'no version'}) is {age_h:.1f} h old (limit {limit:g} h)"
    if age_h > limit and in_deploy:
        evidence += "; deploy_backup takes one next"
    return _item(INFRA, name, age_h <= limit, evidence, warn=in_deploy)


def _stopped(env: Environment, section: str, name: str, running: bool | None) -> ChecklistItem | None:
    if running is False:
        return _not_checked(
            section,
            name,
            f"{env.name}'s services are not running (a first deploy, or stopped): "
            "the verification after the deploy checks them",
        )
    return None


def health_item(env: Environment, running: bool | None, redact: Redactor) -> ChecklistItem:
    name = "health endpoints answer"
    stopped = _stopped(env, INFRA, name, running)
    if stopped:
        return stopped
    if not env.verify.health_urls:
        return _not_checked(INFRA, name, "no health_urls configured")
    seen, unwell, silent = [], [], []
    with _client(env) as client:
        for url in env.verify.health_urls:
            try:
                response = client.get(url)
                (seen if response.status_code == 200 else unwell).append(f"{url} {response.status_code}")
            except httpx.HTTPError as exc:
                silent.append(f"{url} {type(exc).__name__}")
    evidence = redact("; ".join(silent + unwell + seen))
    if silent:
        return _item(INFRA, name, False, evidence)
    # Monitoring works when it answers; an unhealthy answer is what a fix deploy may be for, and the
    # verification after the deploy must pass anyway.
    return _item(INFRA, name, not unwell, evidence + ("; the service reports a problem" if unwell else ""), warn=True)


def metrics_item(env: Environment, running: bool | None, redact: Redactor) -> ChecklistItem:
    name = "metrics endpoint answers"
    stopped = _stopped(env, INFRA, name, running)
    if stopped:
        return stopped
    url = env.checklist.metrics_url
    if url is None:
        return _not_checked(INFRA, name, "no metrics_url configured")
    try:
        with _client(env) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        return _item(INFRA, name, False, redact(f"{url}: {type(exc).__name__}"))
    samples = [ln for ln in response.text.splitlines() if ln and not ln.startswith("#")]
    if response.status_code != 200 or not samples:
        return _item(INFRA, name, False, redact(f"{url}: {response.status_code}, {len(samples)} samples"))
    return _item(INFRA, name, True, redact(f"{url}: 200, {len(samples)} samples, e.g. {samples[0][:80]}"))


def database_item(env: Environment, redact: Redactor) -> ChecklistItem:
    import psycopg

    name = "database healthy, with connection and size headroom"
    rules = env.checklist
    try:
        with psycopg.connect(**env.database.conninfo(statement_timeout_s=30, lock_timeout_s=10)) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            used = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0]
            limit = int(conn.execute("SHOW max_connections").fetchone()[0])
    except psycopg.Error as exc:
        return _item(INFRA, name, False, redact(" ".join(str(exc).split())))
    size_mb = size / (1024 * 1024)
    pct = 100 * used / limit
    problems = []
    if pct > rules.max_connections_used_pct:
        problems.append(f"connections {pct:.0f} % used (limit {rules.max_connections_used_pct:g} %)")
    if rules.max_database_mb is not None and size_mb > rules.max_database_mb:
        problems.append(f"size {size_mb:.0f} MB over {rules.max_database_mb:g} MB")
    cap = f" of {rules.max_database_mb:g} MB" if rules.max_database_mb is not None else ""
    evidence = f"answers; {used} of {limit} connections in use ({pct:.0f} %); {size_mb:.1f} MB{cap}"
    return _item(INFRA, name, not problems, "; ".join(problems + [evidence]))


# Security ---------------------------------------------------------------------------------------


def _vulnerabilities(data: Any) -> list[tuple[str, str]]:
    """(what, severity) of each vulnerability in pip-audit's JSON ({"dependencies": [{name, version,
    vulns: [{id, severity?}]}]}) or npm audit's ({"vulnerabilities": {name: {severity}}})."""
    found = []
    if isinstance(data, dict) and isinstance(data.get("dependencies"), list):
        for dep in data["dependencies"]:
            for vuln in dep.get("vulns") or []:
                found.append(
                    (
                        f"{dep.get('name')} {dep.get('version')} {vuln.get('id')}",
                        str(vuln.get("severity") or "unrated").lower(),
                    )
                )
        return found
    if isinstance(data, dict) and isinstance(data.get("vulnerabilities"), dict):
        return [(name, str(v.get("severity") or "unrated").lower()) for name, v in data["vulnerabilities"].items()]
    raise ValueError("neither pip-audit JSON (dependencies) nor npm audit JSON (vulnerabilities)")


def dependency_scan_item(env: Environment, redact: Redactor) -> ChecklistItem:
    name = "dependency scan finds no critical vulnerability"
    command = env.checklist.dependency_scan
    if not command:
        return _not_checked(SECURITY, name, 'no dependency_scan command configured (e.g. ["pip-audit", "-f", "json"])')
    cwd = env.git_repo if env.git_repo is not None else env.config_file.parent
    try:
        # Scanners exit non-zero when they find something: the JSON says what.
        done = run(command, cwd=cwd, timeout=env.checklist.scan_timeout_s, redact=redact, check=False)
    except CommandFailed as exc:
        return _item(SECURITY, name, False, redact(str(exc)))
    try:
        found = _vulnerabilities(json.loads(done.stdout))
    except ValueError as exc:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        return _item(
            SECURITY,
            name,
            False,
            redact(f"{command[0]} exited {done.returncode}; its output is not scan JSON ({exc}): {tail[:200]}"),
        )
    # pip-audit rates nothing: a known vulnerability without a rating counts as critical.
    critical = [what for what, severity in found if severity in (*_SEVERE, "unrated")]
    others = [f"{what} ({severity})" for what, severity in found if severity not in (*_SEVERE, "unrated")]
    if critical:
        return _item(SECURITY, name, False, f"{len(critical)} critical or unrated: " + "; ".join(critical[:5]))
    return _item(
        SECURITY,
        name,
        True,
        f"{' '.join(command[:3])}: no critical vulnerability"
        + (f"; {len(others)} lower: " + "; ".join(others[:5]) if others else ""),
    )


def _env_files(env: Environment) -> list[Path]:
    files = {env.env_file} if env.env_file.exists() else set()
    if env.root.is_dir():
        files |= {p for p in env.root.iterdir() if p.name.startswith(".env") and p.is_file()}
    return sorted(files)


def env_file_mode_item(env: Environment) -> ChecklistItem:
    name = "env files not readable by others"
    files = _env_files(env)
    if not files:
        return _item(SECURITY, name, False, f"{env.env_file} does not exist")
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in files}
    wide = [f"{p.name} {m:04o}" for p, m in modes.items() if m & 0o077]
    if wide:
        return _item(SECURITY, name, False, f"{', '.join(wide)} is wider than 0600 (chmod 600 it)")
    return _item(SECURITY, name, True, ", ".join(f"{p.name} {m:04o}" for p, m in modes.items()))


def env_file_git_item(env: Environment) -> ChecklistItem:
    name = "env files not tracked by git"
    files = _env_files(env)
    tracked, outside = [], []
    for path in files:
        try:
            code, _ = _git(path.parent, "ls-files", "--error-unmatch", "--", path.name)
        except CommandFailed:  # no git on this machine: nothing can be tracked by it
            return _not_checked(SECURITY, name, "git is not installed here")
        if code == 0:
            tracked.append(str(path))
        else:
            outside.append(path.name)
    if tracked:
        return _item(
            SECURITY, name, False, f"tracked by git: {', '.join(tracked)} (git rm --cached it and add it to .gitignore)"
        )
    return _item(SECURITY, name, True, f"{', '.join(outside) or 'no env file'}: not in any git index")


def _bearer(env: Environment, client: httpx.Client) -> tuple[str | None, str]:
    """A token from the login URL with the env file's credentials, or None and why not."""
    values = read_env_file(env.env_file)
    password = values.get(env.checklist.auth_password_key) or os.environ.get(env.checklist.auth_password_key)
    if not password:
        return None, f"{env.checklist.auth_password_key} is not set in {env.env_file.name}"
    if env.checklist.login_url is None:
        return None, "no login_url configured"
    user = values.get(env.checklist.auth_user_key) or "admin"
    response = client.post(env.checklist.login_url, json={"username": user, "password": password})
    if response.status_code != 200:
        return None, f"login as {user} answered {response.status_code}"
    try:
        token = response.json()["token"]
    except (ValueError, KeyError, TypeError):
        return None, "the login answer holds no token"
    return str(token), f"login as {user} 200"


def auth_item(env: Environment, running: bool | None, redact: Redactor) -> ChecklistItem:
    name = "authentication refuses anonymous, accepts a login"
    stopped = _stopped(env, SECURITY, name, running)
    if stopped:
        return stopped
    url = env.checklist.protected_url
    if url is None:
        return _not_checked(SECURITY, name, "no protected_url configured")
    secrets = Redactor([])
    try:
        with _client(env) as client:
            anonymous = client.get(url)
            if anonymous.status_code not in (401, 403):
                return _item(
                    SECURITY,
                    name,
                    False,
                    redact(f"GET {url} without credentials answered {anonymous.status_code}, not 401 or 403"),
                )
            token, how = _bearer(env, client)
            if token is None:
                return _item(SECURITY, name, False, redact(f"anonymous {anonymous.status_code}; {how}"))
            secrets = Redactor([token])
            accepted = client.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return _item(SECURITY, name, False, secrets(redact(f"{url}: {type(exc).__name__}")))
    evidence = f"GET {url}: anonymous {anonymous.status_code}; {how}; with its token {accepted.status_code}"
    return _item(SECURITY, name, accepted.status_code == 200, secrets(redact(evidence)))


def rate_limit_item(env: Environment, running: bool | None, redact: Redactor) -> ChecklistItem:
    name = "rate limiting enabled"
    stopped = _stopped(env, SECURITY, name, running)
    if stopped:
        return stopped
    url = env.checklist.rate_limit_url
    if url is None:
        return _not_checked(SECURITY, name, "no rate_limit_url configured")
    burst = env.checklist.rate_limit_burst
    statuses: dict[int, int] = {}
    start = time.monotonic()
    try:
        with _client(env) as client:
            for _ in range(burst):
                code = client.get(url).status_code
                statuses[code] = statuses.get(code, 0) + 1
                if code == 429:
                    break  # met: no need to keep hammering the service
    except httpx.HTTPError as exc:
        return _item(SECURITY, name, False, redact(f"{url}: {type(exc).__name__}"))
    sent = sum(statuses.values())
    seen = ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))
    evidence = f"{sent} requests to {url} in {time.monotonic() - start:.2f} s: {seen}"
    if 429 in statuses:
        return _item(SECURITY, name, True, redact(f"{evidence}: limited after {sent - 1} requests"))
    return _item(SECURITY, name, False, redact(f"{evidence}: never limited"))


# The whole list ---------------------------------------------------------------------------------


def run_checklist(
    env: Environment,
    *,
    version: str | None = None,
    redact: Redactor | None = None,
    skip_tests: bool = False,
    in_deploy: bool = False,
    log: Log | None = None,
) -> ChecklistReport:
    """Every item, in the document's order. An item that raises is a failure with its error as
    evidence, so one broken check never hides the others."""
    redact = redact or Redactor.for_environment(env)
    log = log or NullLog()
    running = _services_running(env)
    checks: list[tuple[str, str, Callable[[], ChecklistItem | list[ChecklistItem]]]] = [
        (CODE, "automated tests pass", lambda: tests_item(env, version, redact, skip=skip_tests)),
        (CODE, "code reviewed and approved", review_item),
        (CODE, "no known critical bugs", lambda: critical_bugs_item(env, redact)),
        (CODE, "changelog or docs name the version", lambda: docs_item(env, version)),
        (CODE, "release commit is on main", lambda: on_main_item(env, version)),
        (CONFIG, "environment variables set", lambda: env_file_items(env)),
        (CONFIG, "database migrations prepared", lambda: migrations_item(env, redact)),
        (CONFIG, "LLM provider keys valid, with quota", lambda: llm_item(env, redact)),
        (CONFIG, "feature flags set", lambda: feature_flags_item(env)),
        (INFRA, "disk space", lambda: disk_item(env)),
        (INFRA, "memory available", lambda: memory_item(env)),
        (INFRA, "fresh backup of the current state", lambda: backup_item(env, in_deploy=in_deploy)),
        (INFRA, "health endpoints answer", lambda: health_item(env, running, redact)),
        (INFRA, "metrics endpoint answers", lambda: metrics_item(env, running, redact)),
        (INFRA, "database healthy, with connection and size headroom", lambda: database_item(env, redact)),
        (SECURITY, "dependency scan finds no critical vulnerability", lambda: dependency_scan_item(env, redact)),
        (SECURITY, "env files not readable by others", lambda: env_file_mode_item(env)),
        (SECURITY, "env files not tracked by git", lambda: env_file_git_item(env)),
        (SECURITY, "authentication refuses anonymous, accepts a login", lambda: auth_item(env, running, redact)),
        (SECURITY, "rate limiting enabled", lambda: rate_limit_item(env, running, redact)),
    ]
    items: list[ChecklistItem] = []
    for section, name, check in checks:
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - reported as this item's failure, with its error
            result = ChecklistItem(section, name, Status.FAIL, redact(f"{type(exc).__name__}: {exc}"))
        for item in result if isinstance(result, list) else [result]:
            items.append(item)
            text = f"[{item.status.value.upper()}] {item.name}: {item.evidence}"
            (log.info if item.status == Status.PASS else log.warning)(text)
    return ChecklistReport(env.name, version, items)


def require_checklist(report: ChecklistReport) -> None:
    if report.failures:
        raise OperationError(
            "pre-release checklist failed: " + "; ".join(f"{i.name}: {i.evidence}" for i in report.failures)
        )
