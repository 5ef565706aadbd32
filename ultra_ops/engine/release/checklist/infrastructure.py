"""The checklist's infrastructure items: disk, memory, a fresh backup, health, metrics, the database."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from ultra_ops.engine import procfs
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.release.checklist.report import (
    INFRA,
    ChecklistItem,
    checked,
    http_client,
    httpx,
    not_checked,
    stopped_item,
)
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment

# Infrastructure ---------------------------------------------------------------------------------


def disk_item(env: Environment) -> ChecklistItem:
    private_dir(env.backup_dir)
    free_mb = shutil.disk_usage(env.backup_dir).free // (1024 * 1024)
    return checked(
        INFRA,
        "disk space",
        free_mb >= env.min_free_disk_mb,
        f"{free_mb} MB free at {env.backup_dir} (minimum {env.min_free_disk_mb} MB)",
    )


def memory_item(env: Environment) -> ChecklistItem:
    name = "memory available"
    memory = procfs.memory_mb()
    if memory is None:
        return not_checked(INFRA, name, "/proc/meminfo cannot be read on this machine")
    available, total = memory
    need = env.checklist.min_free_memory_mb
    return checked(INFRA, name, available >= need, f"{available} MB available of {total} MB (minimum {need} MB)")


def backup_item(env: Environment, *, in_deploy: bool) -> ChecklistItem:
    from ultra_ops.engine.backups.store import list_backups
    from ultra_ops.engine.deployed import deployed_version

    name = "fresh backup of the current state"
    current = deployed_version(env)
    if current is None:
        return checked(INFRA, name, True, "nothing deployed yet: no state to back up")
    backups = list_backups(env)
    limit = env.backup.max_age_hours
    # A deploy takes its own backup two steps later: a stale one then warns instead of blocking.
    if not backups:
        return checked(
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
    return checked(INFRA, name, age_h <= limit, evidence, warn=in_deploy)


def health_item(env: Environment, running: bool | None, redact: Redactor) -> ChecklistItem:
    name = "health endpoints answer"
    stopped = stopped_item(env, INFRA, name, running)
    if stopped:
        return stopped
    if not env.verify.health_urls:
        return not_checked(INFRA, name, "no health_urls configured")
    seen, unwell, silent = [], [], []
    with http_client(env) as client:
        for url in env.verify.health_urls:
            try:
                response = client.get(url)
                (seen if response.status_code == 200 else unwell).append(f"{url} {response.status_code}")
            except httpx.HTTPError as exc:
                silent.append(f"{url} {type(exc).__name__}")
    evidence = redact("; ".join(silent + unwell + seen))
    if silent:
        return checked(INFRA, name, False, evidence)
    # Monitoring works when it answers; an unhealthy answer is what a fix deploy may be for, and the
    # verification after the deploy must pass anyway.
    return checked(INFRA, name, not unwell, evidence + ("; the service reports a problem" if unwell else ""), warn=True)


def metrics_item(env: Environment, running: bool | None, redact: Redactor) -> ChecklistItem:
    name = "metrics endpoint answers"
    stopped = stopped_item(env, INFRA, name, running)
    if stopped:
        return stopped
    url = env.checklist.metrics_url
    if url is None:
        return not_checked(INFRA, name, "no metrics_url configured")
    try:
        with http_client(env) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        return checked(INFRA, name, False, redact(f"{url}: {type(exc).__name__}"))
    samples = [ln for ln in response.text.splitlines() if ln and not ln.startswith("#")]
    if response.status_code != 200 or not samples:
        return checked(INFRA, name, False, redact(f"{url}: {response.status_code}, {len(samples)} samples"))
    return checked(INFRA, name, True, redact(f"{url}: 200, {len(samples)} samples, e.g. {samples[0][:80]}"))


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
        return checked(INFRA, name, False, redact(" ".join(str(exc).split())))
    size_mb = size / (1024 * 1024)
    pct = 100 * used / limit
    problems = []
    if pct > rules.max_connections_used_pct:
        problems.append(f"connections {pct:.0f} % used (limit {rules.max_connections_used_pct:g} %)")
    if rules.max_database_mb is not None and size_mb > rules.max_database_mb:
        problems.append(f"size {size_mb:.0f} MB over {rules.max_database_mb:g} MB")
    cap = f" of {rules.max_database_mb:g} MB" if rules.max_database_mb is not None else ""
    evidence = f"answers; {used} of {limit} connections in use ({pct:.0f} %); {size_mb:.1f} MB{cap}"
    return checked(INFRA, name, not problems, "; ".join(problems + [evidence]))
