"""The pre-release checklist of the release document, as far as a machine can check it.

Every item runs; the deploy is blocked when any blocking item fails, and the operator sees all
failures at once rather than one per attempt.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import asdict, dataclass

from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment


@dataclass(frozen=True)
class ChecklistItem:
    section: str  # the release document's heading: Configuration, Infrastructure, Security
    name: str
    ok: bool
    detail: str
    blocking: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _env_file_items(env: Environment) -> list[ChecklistItem]:
    path = env.env_file
    if not path.exists():
        return [ChecklistItem("Configuration", "env file present", False,
                              f"{path} does not exist (ultra-ops init --environment {env.name} creates it)")]
    items = [ChecklistItem("Configuration", "env file present", True, str(path))]
    mode = stat.S_IMODE(path.stat().st_mode)
    items.append(ChecklistItem(
        "Security", "env file permissions", mode & 0o077 == 0,
        f"mode {mode:04o}" + ("" if mode & 0o077 == 0 else " is wider than 0600 (chmod 600 it)")))
    values = read_env_file(path)
    # ULTRA_VERSION is written by the deploy itself, so a first deploy must not need it.
    missing = [k for k in env.required_env_keys if k != "ULTRA_VERSION" and not values.get(k)]
    items.append(ChecklistItem("Configuration", "required env keys", not missing,
                               "missing: " + ", ".join(missing) if missing else "all set"))
    return items


def _secret_items(env: Environment) -> list[ChecklistItem]:
    names = env.required_secret_env_names()
    missing = [n for n in names if not os.environ.get(n)]
    return [ChecklistItem("Security", "secrets in the environment", not missing,
                          "not set: " + ", ".join(missing) if missing else f"{len(names)} set")]


def _disk_item(env: Environment) -> ChecklistItem:
    private_dir(env.backup_dir)
    free_mb = shutil.disk_usage(env.backup_dir).free // (1024 * 1024)
    return ChecklistItem("Infrastructure", "disk space for backups", free_mb >= env.min_free_disk_mb,
                         f"{free_mb} MB free at {env.backup_dir} (minimum {env.min_free_disk_mb} MB)")


def _database_item(env: Environment, redact: Redactor) -> ChecklistItem:
    import psycopg

    try:
        with psycopg.connect(**env.database.conninfo(statement_timeout_s=30, lock_timeout_s=10)) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        return ChecklistItem("Infrastructure", "database healthy", True, f"{size // (1024 * 1024)} MB")
    except psycopg.Error as exc:
        return ChecklistItem("Infrastructure", "database healthy", False, redact(str(exc).strip()))


def _migrations_item(env: Environment, redact: Redactor) -> ChecklistItem:
    from ultra_ops.engine.release.migrate import pending_migrations

    if env.migrations_dir is None:
        return ChecklistItem("Configuration", "database migrations prepared", True, "none configured")
    try:
        pending = pending_migrations(env)
    except Exception as exc:  # a bad file name or an unreachable database: both block the deploy
        return ChecklistItem("Configuration", "database migrations prepared", False, redact(str(exc)))
    return ChecklistItem("Configuration", "database migrations prepared", True,
                         f"{len(pending)} pending" + (": " + ", ".join(pending) if pending else ""))


def run_checklist(env: Environment, *, redact: Redactor | None = None) -> list[ChecklistItem]:
    redact = redact or Redactor.for_environment(env)
    items = [*_env_file_items(env), *_secret_items(env), _disk_item(env), _database_item(env, redact)]
    items.append(_migrations_item(env, redact))
    return items


def require_checklist(items: list[ChecklistItem]) -> None:
    failed = [i for i in items if i.blocking and not i.ok]
    if failed:
        raise OperationError("pre-release checklist failed: "
                             + "; ".join(f"{i.name}: {i.detail}" for i in failed))
