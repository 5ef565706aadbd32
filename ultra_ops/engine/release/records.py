"""Release records: what was deployed where, when, by which run, from which backup.

Records are JSON lines in `<state_dir>/releases.jsonl`, appended with fsync so the next operation
(a rollback, a delivery metric) can find what the last one did.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ultra_ops.engine.settings import Environment


@dataclass(frozen=True)
class ReleaseRecord:
    environment: str
    version: str | None
    status: str  # "deployed", "rolled_back", "deploy_failed"
    run_id: str | None = None
    backup_id: str | None = None
    previous_version: str | None = None
    detail: str = ""
    skip_tests: bool = False
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return asdict(self)


def _records_path(env: Environment) -> Path:
    return env.state_dir / "releases.jsonl"


def record_release(env: Environment, record: ReleaseRecord) -> None:
    path = _records_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record.to_dict()) + "\n")
        f.flush()
        os.fsync(f.fileno())


def release_history(env: Environment) -> list[ReleaseRecord]:
    """Every record, oldest first; a torn last line (crash mid-append) is skipped."""
    path = _records_path(env)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(ReleaseRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return records
