"""The restore test: a backup's dump restored into a scratch database of its own, every table's
row count compared with the count recorded at backup time, and the scratch database dropped,
whatever happens. It reads the backup and touches nothing of the environment, so it runs beside
deploys without the environment's lock.

A test killed half way leaves its scratch database behind with an owner record naming the dead
process; the next restore test (or the next operation's recovery) drops it.
"""

from __future__ import annotations

import json
import os
import secrets as _random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ultra_ops.engine.backups import hosted, swap
from ultra_ops.engine.backups.counts import count_rows
from ultra_ops.engine.backups.dump import checked_tool_version, default_jobs
from ultra_ops.engine.backups.store import BackupInfo
from ultra_ops.engine.errors import BackupError
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.owners import owner_alive, this_process
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")

SCRATCH_KIND = "rtest"  # <db>__rtest_<hex>: apart from a restore's <db>__restore_<hex>, which recovery drops
_APP = "ultra_ops-restore-test"
# As for a restore: nothing of the scratch database needs to survive a crash.
_PGOPTIONS = "-c synchronous_commit=off -c maintenance_work_mem=256MB"


@dataclass(frozen=True)
class RestoreTestReport:
    backup_id: str
    environment: str
    scratch: str
    expected: dict[str, int] | None  # recorded at backup time; None: the backup predates row counts
    restored: dict[str, int]
    duration_s: float
    restore_s: float
    missing: list[str] = field(default_factory=list)  # counted at backup time, not in the restored database
    unexpected: list[str] = field(default_factory=list)  # restored, but not counted at backup time
    mismatched: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (expected, restored)

    @property
    def passed(self) -> bool:
        return self.expected is not None and not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        if self.expected is None:
            return (
                f"backup {self.backup_id} restored ({len(self.restored)} tables), but it records no row "
                "counts to compare with (taken before they were recorded)"
            )
        if self.passed:
            return (
                f"backup {self.backup_id} restored: {len(self.restored)} tables, "
                f"{sum(self.restored.values())} rows, every count as at backup time"
            )
        parts = []
        if self.missing:
            parts.append("missing tables: " + ", ".join(self.missing))
        if self.mismatched:
            parts.append(
                "row counts differ: "
                + ", ".join(f"{t} ({e} at backup time, {r} restored)" for t, (e, r) in sorted(self.mismatched.items()))
            )
        if self.unexpected:
            parts.append("tables not counted at backup time: " + ", ".join(self.unexpected))
        return f"backup {self.backup_id} failed its restore test: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "environment": self.environment,
            "scratch": self.scratch,
            "passed": self.passed,
            "expected": self.expected,
            "restored": self.restored,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": {t: list(v) for t, v in self.mismatched.items()},
            "duration_s": self.duration_s,
            "restore_s": self.restore_s,
        }


def _owners(env: Environment) -> Path:
    return env.state_dir / "restore-tests"


def drop_dead_restore_tests(env: Environment, *, log: Log | None = None, redact: Redactor | None = None) -> list[str]:
    """Drop the scratch databases of restore tests whose process died; one line per database."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    folder = _owners(env)
    if not folder.is_dir():
        return []
    done = []
    for record in sorted(folder.glob("*.json")):
        try:
            alive = owner_alive(json.loads(record.read_text()))
        except (OSError, ValueError, TypeError, AttributeError):
            alive = False  # a record cut short by a crash while it was written
        if alive is not False:
            continue
        scratch = record.stem
        try:
            with swap.admin(env, app=_APP) as conn:
                swap.drop(conn, scratch)
        except psycopg.Error as exc:
            log.warning(redact(f"could not drop {scratch}, left by a restore test: {exc}"))
            continue
        record.unlink(missing_ok=True)
        done.append(f"dropped {scratch}, left by an interrupted restore test")
        log.info(done[-1])
    return done


def restore_test(
    env: Environment,
    info: BackupInfo,
    *,
    log: Log | None = None,
    redact: Redactor | None = None,
    jobs: int | None = None,
) -> RestoreTestReport:
    """Restore `info` into a scratch database, compare row counts, drop the scratch database.
    BackupError when the dump does not restore; a report (passed or not) otherwise."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    started = time.perf_counter()
    if not hosted.on_host(env):  # on a host, the database container's own pg_restore: the server's version
        checked_tool_version("pg_restore", env, redact)  # an older pg_restore fails before a scratch database exists
    drop_dead_restore_tests(env, log=log, redact=redact)
    scratch = swap.scratch_name(env.database.name, SCRATCH_KIND, _random.token_hex(4))
    private_dir(_owners(env))
    record = _owners(env) / f"{scratch}.json"
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**this_process(), "backup_id": info.id}, f)
    created = False
    try:
        try:
            with swap.admin(env, app=_APP) as conn:
                # template0: exactly the dump's objects, nothing template1 carries.
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(psycopg.sql.Identifier(scratch))
                )
                created = True
        except psycopg.Error as exc:
            raise BackupError(redact(f"restore test of {info.id}: cannot create {scratch}: {exc}")) from None
        log.info(f"restore test of {info.id}: pg_restore into {scratch}")
        t0 = time.perf_counter()
        hosted.restore_dump(
            env,
            info,
            scratch,
            app="restore-test",
            options=_PGOPTIONS,
            jobs=jobs or default_jobs(env),
            redact=redact,
            heartbeat=lambda elapsed: log.info(f"restore test of {info.id}: pg_restore running for {elapsed:.0f}s"),
        )
        restore_s = time.perf_counter() - t0
        try:
            with psycopg.connect(
                **env.database.conninfo(scratch, statement_timeout_s=env.backup.timeout_s),
                autocommit=True,
                application_name=_APP,
            ) as conn:
                restored = count_rows(conn)
        except psycopg.Error as exc:
            raise BackupError(redact(f"restore test of {info.id}: counting rows in {scratch} failed: {exc}")) from None
    finally:
        if created:
            try:
                with swap.admin(env, app=_APP) as conn:
                    swap.drop(conn, scratch)
                record.unlink(missing_ok=True)
            except psycopg.Error as exc:  # the record stays: the next restore test drops it
                log.warning(redact(f"restore test of {info.id}: could not drop {scratch}: {exc}"))
        else:
            record.unlink(missing_ok=True)
    expected = info.tables
    report = RestoreTestReport(
        backup_id=info.id,
        environment=env.name,
        scratch=scratch,
        expected=expected,
        restored=restored,
        duration_s=round(time.perf_counter() - started, 3),
        restore_s=round(restore_s, 3),
        missing=sorted(set(expected or {}) - set(restored)) if expected is not None else [],
        unexpected=sorted(set(restored) - set(expected)) if expected is not None else [],
        mismatched={
            t: (expected[t], restored[t])
            for t in sorted(set(expected or {}) & set(restored))
            if expected[t] != restored[t]
        }
        if expected is not None
        else {},
    )
    log.info(report.summary())
    return report
