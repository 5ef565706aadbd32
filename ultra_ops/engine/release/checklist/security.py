"""The checklist's security items: dependency scan, env files' modes and git, authentication, rate limiting."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import CommandFailed
from ultra_ops.engine.release.checklist.report import (
    SECURITY,
    SEVERE,
    ChecklistItem,
    checked,
    git,
    http_client,
    httpx,
    not_checked,
    stopped_item,
)
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.shell import run

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
        return not_checked(SECURITY, name, 'no dependency_scan command configured (e.g. ["pip-audit", "-f", "json"])')
    cwd = env.git_repo if env.git_repo is not None else env.config_file.parent
    try:
        # Scanners exit non-zero when they find something: the JSON says what.
        done = run(command, cwd=cwd, timeout=env.checklist.scan_timeout_s, redact=redact, check=False)
    except CommandFailed as exc:
        return checked(SECURITY, name, False, redact(str(exc)))
    try:
        found = _vulnerabilities(json.loads(done.stdout))
    except ValueError as exc:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        return checked(
            SECURITY,
            name,
            False,
            redact(f"{command[0]} exited {done.returncode}; its output is not scan JSON ({exc}): {tail[:200]}"),
        )
    # pip-audit rates nothing: a known vulnerability without a rating counts as critical.
    critical = [what for what, severity in found if severity in (*SEVERE, "unrated")]
    others = [f"{what} ({severity})" for what, severity in found if severity not in (*SEVERE, "unrated")]
    if critical:
        return checked(SECURITY, name, False, f"{len(critical)} critical or unrated: " + "; ".join(critical[:5]))
    return checked(
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
        return checked(SECURITY, name, False, f"{env.env_file} does not exist")
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in files}
    wide = [f"{p.name} {m:04o}" for p, m in modes.items() if m & 0o077]
    if wide:
        return checked(SECURITY, name, False, f"{', '.join(wide)} is wider than 0600 (chmod 600 it)")
    return checked(SECURITY, name, True, ", ".join(f"{p.name} {m:04o}" for p, m in modes.items()))


def env_file_git_item(env: Environment) -> ChecklistItem:
    name = "env files not tracked by git"
    files = _env_files(env)
    tracked, outside = [], []
    for path in files:
        try:
            code, _ = git(path.parent, "ls-files", "--error-unmatch", "--", path.name)
        except CommandFailed:  # no git on this machine: nothing can be tracked by it
            return not_checked(SECURITY, name, "git is not installed here")
        if code == 0:
            tracked.append(str(path))
        else:
            outside.append(path.name)
    if tracked:
        return checked(
            SECURITY, name, False, f"tracked by git: {', '.join(tracked)} (git rm --cached it and add it to .gitignore)"
        )
    return checked(SECURITY, name, True, f"{', '.join(outside) or 'no env file'}: not in any git index")


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
    stopped = stopped_item(env, SECURITY, name, running)
    if stopped:
        return stopped
    url = env.checklist.protected_url
    if url is None:
        return not_checked(SECURITY, name, "no protected_url configured")
    secrets = Redactor([])
    try:
        with http_client(env) as client:
            anonymous = client.get(url)
            if anonymous.status_code not in (401, 403):
                return checked(
                    SECURITY,
                    name,
                    False,
                    redact(f"GET {url} without credentials answered {anonymous.status_code}, not 401 or 403"),
                )
            token, how = _bearer(env, client)
            if token is None:
                return checked(SECURITY, name, False, redact(f"anonymous {anonymous.status_code}; {how}"))
            secrets = Redactor([token])
            accepted = client.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return checked(SECURITY, name, False, secrets(redact(f"{url}: {type(exc).__name__}")))
    evidence = f"GET {url}: anonymous {anonymous.status_code}; {how}; with its token {accepted.status_code}"
    return checked(SECURITY, name, accepted.status_code == 200, secrets(redact(evidence)))


def rate_limit_item(env: Environment, running: bool | None, redact: Redactor) -> ChecklistItem:
    name = "rate limiting enabled"
    stopped = stopped_item(env, SECURITY, name, running)
    if stopped:
        return stopped
    url = env.checklist.rate_limit_url
    if url is None:
        return not_checked(SECURITY, name, "no rate_limit_url configured")
    burst = env.checklist.rate_limit_burst
    statuses: dict[int, int] = {}
    start = time.monotonic()
    try:
        with http_client(env) as client:
            for _ in range(burst):
                code = client.get(url).status_code
                statuses[code] = statuses.get(code, 0) + 1
                if code == 429:
                    break  # met: no need to keep hammering the service
    except httpx.HTTPError as exc:
        return checked(SECURITY, name, False, redact(f"{url}: {type(exc).__name__}"))
    sent = sum(statuses.values())
    seen = ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))
    evidence = f"{sent} requests to {url} in {time.monotonic() - start:.2f} s: {seen}"
    if 429 in statuses:
        return checked(SECURITY, name, True, redact(f"{evidence}: limited after {sent - 1} requests"))
    return checked(SECURITY, name, False, redact(f"{evidence}: never limited"))
