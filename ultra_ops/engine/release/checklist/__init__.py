"""The pre-release checklist of the release document: every item of its four groups (code quality,
configuration, infrastructure, security) as a check that passes, warns or fails with the evidence
it saw.

Every item runs; the deploy is blocked when any item fails, and the operator sees all failures at
once rather than one per attempt. What a machine cannot know (a code review, open bugs without a
configured source) is a warning that says plainly it was not checked.
"""

from __future__ import annotations

from collections.abc import Callable

from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.release.checklist.code_quality import (
    critical_bugs_item,
    docs_item,
    on_main_item,
    review_item,
    tests_item,
)
from ultra_ops.engine.release.checklist.configuration import (
    env_file_items,
    feature_flags_item,
    llm_item,
    migrations_item,
)
from ultra_ops.engine.release.checklist.infrastructure import (
    backup_item,
    database_item,
    disk_item,
    health_item,
    memory_item,
    metrics_item,
)
from ultra_ops.engine.release.checklist.report import (
    CODE,
    CONFIG,
    INFRA,
    SECTIONS,
    SECURITY,
    ChecklistItem,
    ChecklistReport,
    Status,
    services_running,
)
from ultra_ops.engine.release.checklist.security import (
    auth_item,
    dependency_scan_item,
    env_file_git_item,
    env_file_mode_item,
    rate_limit_item,
)
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

__all__ = [
    "SECTIONS",
    "ChecklistItem",
    "ChecklistReport",
    "Status",
    "run_checklist",
    "require_checklist",
    "tests_item",
    "review_item",
    "critical_bugs_item",
    "docs_item",
    "on_main_item",
    "env_file_items",
    "migrations_item",
    "llm_item",
    "feature_flags_item",
    "disk_item",
    "memory_item",
    "backup_item",
    "health_item",
    "metrics_item",
    "database_item",
    "dependency_scan_item",
    "env_file_mode_item",
    "env_file_git_item",
    "auth_item",
    "rate_limit_item",
]

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
    running = services_running(env)
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
