"""A backup of the platform's storage (the platform: Dagster's own deployment), its PostgreSQL:
the run history, event logs, schedule and sensor state.

Not an environment's backup (no state files, no restore into a scratch database): one `pg_dump
-Fc` file per backup in a folder of its own, written under a temporary name and renamed, the
newest `keep` kept. Restore with `pg_restore -d <empty database> <file>` while the platform is
stopped. The password travels only in PGPASSWORD, never in argv or in a message.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ultra_ops.engine import shell
from ultra_ops.engine.backups.checksums import hash_file
from ultra_ops.engine.backups.dump import refuse_older_tool, tool_version
from ultra_ops.engine.errors import BackupError, InputError
from ultra_ops.engine.files import fsync_dir, private_dir
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Log, NullLog, Redactor

psycopg = lazy_module("psycopg")

PREFIX = "dagster-"
SUFFIX = ".dump"


def storage_params(url: str) -> dict[str, Any]:
    """libpq parameters from Dagster's storage URL (`postgresql+psycopg2://user:pw@host:port/db`)."""
    from psycopg.conninfo import conninfo_to_dict

    plain = re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)
    try:
        params = conninfo_to_dict(plain)
    except psycopg.ProgrammingError:
        raise InputError("Dagster's storage URL cannot be read as a PostgreSQL address") from None
    if not params.get("dbname"):
        raise InputError("Dagster's storage URL names no database")
    return params


def dump_storage(
    url: str, folder: Path, *, keep: int = 7, timeout_s: float = 3600.0, log: Log | None = None
) -> dict[str, Any]:
    """Dump Dagster's database into `folder`; returns the file, its size and sha256, and what was pruned."""
    if keep < 1:
        raise InputError(f"keep: {keep} would remove the backup just taken; at least 1")
    log = log or NullLog()
    params = storage_params(url)
    redact = Redactor([str(params.get("password", ""))])
    env = {
        "PGHOST": str(params.get("host", "")),
        "PGPORT": str(params.get("port", 5432)),
        "PGUSER": str(params.get("user", "")),
        "PGDATABASE": str(params["dbname"]),
        "PGCONNECT_TIMEOUT": "10",
        "PGAPPNAME": "ultra_ops-platform-backup",
    }
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    text = tool_version("pg_dump")
    try:
        with psycopg.connect(**params, connect_timeout=10) as conn:
            server = conn.info.server_version
    except psycopg.Error as exc:
        raise BackupError(redact(f"cannot reach Dagster's database: {exc}")) from None
    refuse_older_tool("pg_dump", text, server, "Dagster's PostgreSQL server", redact)
    try:
        private_dir(folder)
    except OSError as exc:
        raise BackupError(f"cannot create {folder}: {exc.strerror}") from None
    name = f"{PREFIX}{params['dbname']}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}{SUFFIX}"
    tmp, final = folder / f".tmp-{name}", folder / name
    log.info(f"dumping Dagster's database {params['dbname']} into {final}")
    try:
        shell.run(
            ["pg_dump", "-Fc", "-f", str(tmp)],
            env=env,
            timeout=timeout_s,
            redact=redact,
            die_with_parent=True,
            error=BackupError,
        )
        size, digest = hash_file(tmp, sync=True)
        os.replace(tmp, final)
        fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    removed = prune(folder, keep)
    for old in removed:
        log.info(f"removed {old} (keeping the newest {keep})")
    return {"file": str(final), "bytes": size, "sha256": digest, "removed": removed}


def prune(folder: Path, keep: int) -> list[str]:
    """Remove all but the newest `keep` dumps (their names sort by time)."""
    dumps = sorted(p for p in folder.glob(f"{PREFIX}*{SUFFIX}"))
    removed = []
    for old in dumps[:-keep]:
        old.unlink(missing_ok=True)
        removed.append(old.name)
    return removed


def list_dumps(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{PREFIX}*{SUFFIX}"), reverse=True)
