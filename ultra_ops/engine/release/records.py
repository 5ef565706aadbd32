"""Release records: what each deploy and rollback of an environment did, for the next operation to query.

One SQLite database per environment, `<state_dir>/releases.sqlite3` (WAL mode), one table
indexed by (environment, version) and by status. A record is one row written in one
transaction: a process killed at any moment leaves either the whole record or none of it.
Every operation that held the environment's lock leaves exactly one record: deploy and rollback
build it with one `operation_record`, and record a failure with one `recording_failure`, so the
two operations' records cannot drift apart.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from ultra_ops.engine import runs
from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.events import announce
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.release.git_tags import commit_of
from ultra_ops.engine.secrets import Log, NullLog
from ultra_ops.engine.settings import Environment

OPERATIONS = ("deploy", "rollback")
RELEASE_TOPIC = "release"  # what engine.events announces once a record is written
_SCHEMA_VERSION = 2  # 2: status `interrupted`
_COLUMNS = (
    "environment",
    "operation",
    "version",
    "previous_version",
    "status",
    "git_commit",
    "backup_id",
    "run_id",
    "launched_by",
    "started_at",
    "ended_at",
    "reason",
)
_STATUSES = ("deployed", "failed", "rolled_back", "rollback_failed", "interrupted")
_TABLE = f"""
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    operation TEXT NOT NULL CHECK (operation IN {OPERATIONS!r}),
    version TEXT,
    previous_version TEXT,
    status TEXT NOT NULL CHECK (status IN {_STATUSES!r}),
    git_commit TEXT,
    backup_id TEXT,
    run_id TEXT,
    launched_by TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    reason TEXT
)"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS releases_environment_version ON releases (environment, version);
CREATE INDEX IF NOT EXISTS releases_status ON releases (status);
CREATE INDEX IF NOT EXISTS releases_run_id ON releases (run_id);
"""


class ReleaseStatus(enum.StrEnum):
    """How an operation ended.

    deployed: the deploy went through and verified. failed: the operation stopped before it changed
    the environment (checklist, tests, a damaged backup refused), or after a step that rollback does
    not undo (build, push, tag). rolled_back: a manual rollback succeeded, or a deploy failed after
    its backup and was rolled back to it automatically. rollback_failed: that rollback failed too.
    interrupted: Ctrl-C or SIGTERM stopped it (recorded at once, the reason saying in what state it
    left the environment), or its process died (recorded by the next operation, which finds it).
    """

    DEPLOYED = "deployed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, kw_only=True)
class ReleaseRecord:
    """One deploy or rollback. `version` is what the operation put in place (or tried to): the
    deployed tag, or the version a rollback restored; `previous_version` what ran before it."""

    environment: str
    operation: str  # "deploy" or "rollback"
    version: str | None
    previous_version: str | None
    status: ReleaseStatus
    commit: str | None = None  # git commit of the version's tag in env.git_repo, where known
    backup_id: str | None = None
    run_id: str | None = None
    launched_by: str | None = None
    started_at: str  # ISO-8601 UTC
    ended_at: str  # ISO-8601 UTC
    reason: str | None = None  # why it failed or was rolled back

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise InputError(f"release operation {self.operation!r} is not one of {', '.join(OPERATIONS)}")
        try:
            object.__setattr__(self, "status", ReleaseStatus(self.status))
        except ValueError:
            raise InputError(
                f"release status {self.status!r} is not one of " + ", ".join(s.value for s in ReleaseStatus)
            ) from None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        return data


def releases_path(env: Environment) -> Path:
    return env.state_dir / "releases.sqlite3"


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE ... COMMIT below.
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed record survives a power cut, not only a kill
        if conn.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _create_or_upgrade(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        yield conn


def _create_or_upgrade(conn: sqlite3.Connection) -> None:
    """Inside the writer's transaction: the version is read again, so of two first writers the
    second finds the work done. Version 1's CHECK does not allow `interrupted`, and SQLite cannot
    change a CHECK: its rows are copied into a new table."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == _SCHEMA_VERSION:
        return
    if version == 1:
        conn.execute("ALTER TABLE releases RENAME TO releases_v1")
        conn.execute(_TABLE)
        conn.execute("INSERT INTO releases SELECT * FROM releases_v1")
        conn.execute("DROP TABLE releases_v1")  # its indexes go with it; the new table's follow
    else:
        conn.execute(_TABLE)
    for statement in filter(str.strip, _INDEXES.split(";")):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


def record_release(env: Environment, record: ReleaseRecord) -> ReleaseRecord:
    """Write one record, atomically and durably."""
    path = releases_path(env)
    private_dir(path.parent)
    if not path.exists():
        # Reasons are redacted, but they are an operator's business: no wider than the env file.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    row = record.to_dict()
    row["git_commit"] = row.pop("commit")
    with _connect(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"INSERT INTO releases ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                [row[c] for c in _COLUMNS],
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    announce(RELEASE_TOPIC, record)  # a Dagster step records it as a materialization of `releases`
    return record


def find_releases(
    env: Environment,
    *,
    version: str | None = None,
    status: ReleaseStatus | str | None = None,
    operation: str | None = None,
    run_id: str | None = None,
    limit: int | None = None,
) -> list[ReleaseRecord]:
    """The environment's records matching every given filter, newest first."""
    path = releases_path(env)
    if not path.exists():
        return []
    where, params = ["environment = ?"], [env.name]
    for column, value in (
        ("version", version),
        ("operation", operation),
        ("run_id", run_id),
        ("status", ReleaseStatus(status).value if status is not None else None),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM releases WHERE {' AND '.join(where)} ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    with _connect(path) as conn:
        rows = conn.execute(sql, params).fetchall()
    records = []
    for values in rows:
        data = dict(zip(_COLUMNS, values, strict=True))
        data["commit"] = data.pop("git_commit")
        records.append(ReleaseRecord(**data))
    return records


def last_release(
    env: Environment,
    *,
    version: str | None = None,
    status: ReleaseStatus | str | None = None,
    operation: str | None = None,
    run_id: str | None = None,
) -> ReleaseRecord | None:
    """The newest record matching the filters, or None."""
    found = find_releases(env, version=version, status=status, operation=operation, run_id=run_id, limit=1)
    return found[0] if found else None


def verified_deploys(env: Environment, *, version: str | None = None, limit: int | None = None) -> list[ReleaseRecord]:
    """The environment's deploys that went through and verified (of `version` only, when given),
    newest first: what the promotion gate, approvals and retention ask of the history."""
    return find_releases(env, version=version, status=ReleaseStatus.DEPLOYED, operation="deploy", limit=limit)


def kept_for_rollback(env: Environment) -> set[str]:
    """The backup the newest verified deploy took: rolling back the release it put in place goes back
    to it, so retention never removes it. Empty before the first deploy."""
    newest = verified_deploys(env, limit=1)
    return {newest[0].backup_id} if newest and newest[0].backup_id else set()


# Building the record of a deploy or rollback -----------------------------------------------------


class Operation(Protocol):
    """What a deploy request and a rollback plan both carry into their record."""

    @property
    def backup_id(self) -> str | None: ...
    @property
    def previous_version(self) -> str | None: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def launched_by(self) -> str | None: ...
    @property
    def started_at(self) -> str | None: ...


def operation_record(
    env: Environment,
    operation: str,
    done: Operation,
    status: ReleaseStatus,
    *,
    version: str | None,
    previous_noted: bool,
    reason: str | None = None,
) -> ReleaseRecord:
    """The record of a deploy or rollback that ends now: `version` is what it put in place (or
    meant to). What ran before is what `done` noted when its first step that changes anything ran
    (`previous_noted`); before that step nothing has changed, so it is what runs now."""
    previous = done.previous_version if previous_noted else deployed_version(env)
    return ReleaseRecord(
        environment=env.name,
        operation=operation,
        version=version,
        previous_version=previous,
        status=status,
        commit=commit_of(env, version),
        backup_id=done.backup_id,
        run_id=done.run_id,
        launched_by=done.launched_by,
        started_at=done.started_at or utc_timestamp(),
        ended_at=utc_timestamp(),
        reason=reason,
    )


def with_outcome(error: Exception, status: ReleaseStatus) -> Exception:
    """Mark an error with how it left the environment (a deploy's automatic rollback knows), so
    `recording_failure` records that instead of the step's own status."""
    error.release_status = status  # type: ignore[attr-defined]
    return error


@contextmanager
def recording_failure(
    env: Environment,
    describe: Callable[[ReleaseStatus, str], ReleaseRecord],
    *,
    redact: Callable[[str], str],
    status: ReleaseStatus = ReleaseStatus.FAILED,
    log: Log | None = None,
) -> Iterator[None]:
    """Record the failure of the operation inside the block, then re-raise it unchanged.
    `describe` builds the record from the outcome (`status`, unless the error is marked
    `with_outcome`) and the redacted error; an interrupt that reaches here as it came (Ctrl-C,
    SIGTERM) is recorded `interrupted`. A record that cannot be written is logged, so the
    operation's own error is still the one raised. On entry the record this step would leave if
    its process died is noted in the run's marker (runs.py), for the next operation to write."""
    log = log or NullLog()
    try:
        runs.note_record(env, describe(ReleaseStatus.INTERRUPTED, "").to_dict())
    except Exception as exc:  # noqa: BLE001 - the step matters more than its draft
        log.warning(f"could not note this run in its marker: {exc}")
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, GeneratorExit):
            raise
        if isinstance(exc, Exception):
            outcome, reason = getattr(exc, "release_status", status), redact(str(exc))
        else:
            outcome, reason = ReleaseStatus.INTERRUPTED, f"interrupted ({type(exc).__name__})"
        try:
            record_release(env, describe(outcome, reason))
        except Exception as record_exc:  # noqa: BLE001 - the operation's error matters more
            log.warning(f"the release record of this failure could not be written: {record_exc}")
        raise


def record_unfinished(env: Environment, marker: dict, reason: str) -> ReleaseRecord | None:
    """The `interrupted` record of a run that ended without writing its own, from the draft its
    marker holds; None when it wrote one, or was no deploy or rollback."""
    draft = marker.get("record")
    if not isinstance(draft, dict):
        return None
    if draft.get("run_id") and find_releases(env, run_id=draft["run_id"], limit=1):
        return None
    fields = {k: v for k, v in draft.items() if k in ReleaseRecord.__dataclass_fields__}
    record = ReleaseRecord(
        **{**fields, "status": ReleaseStatus.INTERRUPTED, "ended_at": utc_timestamp(), "reason": reason}
    )
    return record_release(env, record)
