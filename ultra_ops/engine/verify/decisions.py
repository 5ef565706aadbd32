"""Decisions on inconclusive verification windows: a deploy asks, a person answers (approve or roll
back, from the UI's decision job or `ultra-ops verify --decide`), and who answered is kept.

One SQLite database per environment, `<state_dir>/decisions.sqlite3`: a request is a row written
by the waiting deploy; the answer fills it in one transaction, only while it is still open, so
two people deciding at once cannot both win. The deploy polls its row: the decision is an event in
a file that any process on the host (a CLI, a run container sharing the folder) can write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass

from ultra_ops.engine.clock import local_time, utc_timestamp
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.events import announce
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import Environment

DECISIONS = ("approve", "rollback")
TIMEOUT_DECIDER = "timeout"  # who "decided" when nobody did within decision_wait_s
ABANDONED_DECIDER = "abandoned"  # a request whose deploy was interrupted or killed while it waited
DECISION_TOPIC = "decision"  # what engine.events announces when a request opens or closes
_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    version TEXT,
    run_id TEXT,
    asked_at TEXT NOT NULL,
    summary TEXT NOT NULL,
    decision TEXT CHECK (decision IN ('approve', 'rollback')),
    decided_by TEXT,
    decided_at TEXT,
    launched_by TEXT,
    reason TEXT
);
"""


@dataclass(frozen=True)
class DecisionRecord:
    id: str
    environment: str
    version: str | None
    run_id: str | None
    asked_at: str
    summary: str
    decision: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    launched_by: str | None = None  # the account that ran the decision (OS user, "ui")
    reason: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


@contextmanager
def _db(env: Environment) -> Iterator[sqlite3.Connection]:
    private_dir(env.state_dir)
    path = env.state_dir / "decisions.sqlite3"
    new = not path.exists()
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as conn:
        if new:
            os.chmod(path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        yield conn


def _record(row: tuple) -> DecisionRecord:
    return DecisionRecord(*row)


_FIELDS = "id, environment, version, run_id, asked_at, summary, decision, decided_by, decided_at, launched_by, reason"


def ask(env: Environment, request_id: str, *, version: str | None, run_id: str | None, summary: str) -> DecisionRecord:
    """Open a request for a decision (idempotent for a re-executed step). A request still open from
    an earlier deploy belongs to a deploy that was killed while it waited (the environment's lock
    lets one deploy wait at a time): it is closed, so nobody answers a question nobody asks."""
    with _db(env) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE decisions SET decision = 'rollback', decided_by = ?, decided_at = ?, "
            "reason = 'its deploy stopped waiting' WHERE decision IS NULL AND id != ?",
            (ABANDONED_DECIDER, utc_timestamp(), request_id),
        )
        conn.execute(
            "INSERT OR IGNORE INTO decisions (id, environment, version, run_id, asked_at, summary) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (request_id, env.name, version, run_id, utc_timestamp(), summary),
        )
        conn.execute("COMMIT")
    record = get(env, request_id)
    announce(DECISION_TOPIC, record)  # a Dagster step shows it as pending_decisions
    return record


def get(env: Environment, request_id: str) -> DecisionRecord:
    with _db(env) as conn:
        row = conn.execute(f"SELECT {_FIELDS} FROM decisions WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise InputError(f"no decision request {request_id!r} on {env.name}")
    return _record(row)


def pending(env: Environment) -> list[DecisionRecord]:
    """Open requests of the environment, oldest first."""
    with _db(env) as conn:
        rows = conn.execute(f"SELECT {_FIELDS} FROM decisions WHERE decision IS NULL ORDER BY asked_at").fetchall()
    return [_record(r) for r in rows]


def decide(
    env: Environment,
    decision: str,
    *,
    by: str,
    launched_by: str | None = None,
    reason: str | None = None,
    request_id: str | None = None,
) -> DecisionRecord:
    """Answer a request: the one named, or the environment's only open one. InputError when there is
    nothing to decide, several to choose from, or it was decided already (and by whom)."""
    if decision not in DECISIONS:
        raise InputError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not by.strip() or by != by.strip() or "\n" in by:
        raise InputError("--by must name who decides (one line, no surrounding blanks)")
    if request_id is None:
        open_ = pending(env)
        if not open_:
            raise InputError(f"no verification of {env.name} is waiting for a decision")
        if len(open_) > 1:
            raise InputError(
                f"{len(open_)} verifications of {env.name} wait for a decision; name one: "
                + ", ".join(r.id for r in open_)
            )
        request_id = open_[0].id
    with _db(env) as conn:
        changed = conn.execute(
            "UPDATE decisions SET decision = ?, decided_by = ?, decided_at = ?, launched_by = ?, reason = ? "
            "WHERE id = ? AND decision IS NULL",
            (decision, by, utc_timestamp(), launched_by, reason, request_id),
        ).rowcount
    record = get(env, request_id)
    if not changed:
        at = local_time(record.decided_at, env.timezone) if record.decided_at else "an unknown time"
        raise InputError(f"{request_id} was decided already: {record.decision} by {record.decided_by} at {at}")
    announce(DECISION_TOPIC, record)
    return record


def wait_for_decision(
    env: Environment, request_id: str, max_wait_s: float, *, log: Log, poll_s: float = 1.0, remind_s: float = 300.0
) -> DecisionRecord:
    """Poll the request until someone decides; after `max_wait_s` decide `rollback` as `timeout`."""
    with abandoned_on_interrupt(env, request_id):
        return _wait(env, request_id, max_wait_s, log=log, poll_s=poll_s, remind_s=remind_s)


@contextmanager
def abandoned_on_interrupt(env: Environment, request_id: str) -> Iterator[None]:
    """Interrupted (Ctrl-C, SIGTERM) while the request is open: the deploy rolls back, so the request
    is closed as `abandoned` rather than left for someone to answer."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            decide(
                env,
                "rollback",
                by=ABANDONED_DECIDER,
                request_id=request_id,
                reason="the deploy was interrupted while it waited",
            )
        raise


def _wait(
    env: Environment, request_id: str, max_wait_s: float, *, log: Log, poll_s: float, remind_s: float
) -> DecisionRecord:
    deadline = time.monotonic() + max_wait_s
    next_reminder = time.monotonic() + remind_s
    while True:
        record = get(env, request_id)
        if record.decision is not None:
            return record
        now = time.monotonic()
        if now >= deadline:
            try:
                return decide(
                    env,
                    "rollback",
                    by=TIMEOUT_DECIDER,
                    request_id=request_id,
                    reason=f"nobody decided within {max_wait_s:g}s",
                )
            except InputError:
                continue  # a person decided in the same moment: theirs stands
        if now >= next_reminder:
            log.warning(f"still waiting for a decision on {request_id} ({deadline - now:.0f}s left, then roll back)")
            next_reminder = now + remind_s
        time.sleep(min(poll_s, max(deadline - now, 0.01)))
