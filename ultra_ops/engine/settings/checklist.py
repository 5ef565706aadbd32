"""The pre-release checklist: `[environments.X.checklist]` (or `[defaults.checklist]`).

    [environments.production.checklist]
    docs = ["CHANGELOG.md"]                 # in git_repo, at the release's commit: must name the version
    critical_bugs = "known_bugs.json"       # a JSON file or http(s) URL of open bugs; unset: "not checked"
    feature_flags = ["ULTRA_FEATURE_FLAGS"] # env file keys that must be set
    min_free_memory_mb = 256
    metrics_url = "http://127.0.0.1:8002/metrics"
    max_connections_used_pct = 80           # of the server's max_connections
    max_database_mb = 10240                 # unset: the size is reported, not limited
    dependency_scan = ["pip-audit", "-f", "json"]   # its JSON is read; unset: "not checked"
    protected_url = "http://127.0.0.1:8002/api/v1/me"
    login_url = "http://127.0.0.1:8002/api/v1/auth/login"
    rate_limit_url = "http://127.0.0.1:8002/api/v1/version"
    rate_limit_burst = 50

Every key has a default; an item whose target is not configured says plainly that it was not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ultra_ops.engine.settings.table import TableReader, expand_command


@dataclass(frozen=True)
class ChecklistSettings:
    docs: tuple[str, ...] = ("CHANGELOG.md",)
    critical_bugs: str | None = None  # an http(s) URL or an absolute path
    feature_flags: tuple[str, ...] = ()
    min_free_memory_mb: int = 256
    metrics_url: str | None = None
    max_connections_used_pct: float = 80.0
    max_database_mb: float | None = None
    dependency_scan: tuple[str, ...] = ()
    scan_timeout_s: float = 600.0
    protected_url: str | None = None
    login_url: str | None = None
    auth_user_key: str = "ULTRA_AUTH_USER"  # env file keys: the service reads the same ones
    auth_password_key: str = "ULTRA_AUTH_PASSWORD"
    rate_limit_url: str | None = None
    rate_limit_burst: int = 50
    min_llm_requests_remaining: int = 10
    timeout_s: float = 5.0  # each HTTP request of the checklist


def read_checklist(r: TableReader | None, base: Path) -> ChecklistSettings:
    """The table, checked whole; paths relative to the config file's folder `base`."""
    if r is None:
        return ChecklistSettings()
    d = ChecklistSettings()
    bugs = r.get("critical_bugs", str, None)
    if bugs is not None and not bugs.startswith(("http://", "https://")):
        bugs = str((base / bugs).resolve())
    pct = r.above_zero("max_connections_used_pct", d.max_connections_used_pct, at_most=100, unit="%")
    size = r.budget("max_database_mb", at_most=1_000_000_000, unit=" MB")
    burst = r.positive("rate_limit_burst", d.rate_limit_burst, integer=True)
    if not 2 <= burst <= 10000:
        raise r.fail("rate_limit_burst", f"expected 2 to 10000 requests, got {burst}")
    timeout = r.above_zero("timeout_s", d.timeout_s, at_most=600, unit=" seconds")
    scan_timeout = r.above_zero("scan_timeout_s", d.scan_timeout_s, at_most=86400, unit=" seconds")
    settings = ChecklistSettings(
        docs=r.string_list("docs", d.docs),
        critical_bugs=bugs,
        feature_flags=r.string_list("feature_flags"),
        min_free_memory_mb=r.positive(
            "min_free_memory_mb", d.min_free_memory_mb, integer=True, at_most=100_000_000, unit=" MB"
        ),
        metrics_url=r.url("metrics_url", required=False),
        max_connections_used_pct=pct,
        max_database_mb=size,
        dependency_scan=expand_command(r.string_list("dependency_scan")),
        scan_timeout_s=scan_timeout,
        protected_url=r.url("protected_url", required=False),
        login_url=r.url("login_url", required=False),
        auth_user_key=r.get("auth_user_key", str, d.auth_user_key),
        auth_password_key=r.get("auth_password_key", str, d.auth_password_key),
        rate_limit_url=r.url("rate_limit_url", required=False),
        rate_limit_burst=burst,
        min_llm_requests_remaining=r.positive(
            "min_llm_requests_remaining", d.min_llm_requests_remaining, integer=True, at_most=1_000_000_000
        ),
        timeout_s=timeout,
    )
    r.finish()
    return settings
