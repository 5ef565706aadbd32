"""The backup store: one folder per backup holding the database dump, the state files and a manifest.

`backups/<environment>/<id>/` contains `manifest.json`, the dump (`database/` in pg_dump's
directory format or `database.dump` in custom format) and `files.tar.gz` with the state files.
A backup is written under `.tmp-<id>`, fsynced and renamed into place, so a crash never leaves
anything that list_backups shows; restore trusts only what verify_backup has checked.
"""

from __future__ import annotations

import json
import os
import secrets as _random
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ultra_ops.engine.backups.checksums import hash_files, walk_files
from ultra_ops.engine.errors import BackupError, InputError, IntegrityError
from ultra_ops.engine.inputs import validate_backup_id
from ultra_ops.engine.owners import owner_alive, this_process
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import BACKUP_FORMATS, Environment

MANIFEST = "manifest.json"
FILES_ARCHIVE = "files.tar.gz"
DUMP_DIR = "database"
DUMP_FILE = "database.dump"
TMP_PREFIX = ".tmp-"
SAFETY_LABEL = "safety before restore of"  # the label of the backup a restore takes first
DEPLOY_LABEL = "pre-deploy"  # the label of a deploy's backup, followed by the tag it deploys
# How a backup was taken: by the nightly schedule, by a deploy before it changes anything, by a
# rollback or restore before it replaces the current state, or by an operator.
KINDS = ("scheduled", "deploy", "safety", "manual")
OWNER_SUFFIX = ".owner"  # `.tmp-<id>.owner` beside a temp folder: who writes it, for stale-temp cleanup
MANIFEST_VERSION = 1
STALE_TEMP_AGE_S = 3600.0


@dataclass(frozen=True)
class BackupInfo:
    id: str
    environment: str
    version: str | None
    created_at: str  # ISO 8601 UTC
    path: Path
    format: str  # "directory" | "custom"
    size_bytes: int
    files: dict[str, dict]  # relative path -> {"size": int, "sha256": str}
    label: str
    kind: str = "manual"  # one of KINDS
    tables: dict[str, int] | None = None  # "schema.table" -> rows at backup time; None: not recorded
    duration_s: float | None = None  # how long taking it took

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "environment": self.environment,
            "version": self.version,
            "created_at": self.created_at,
            "path": str(self.path),
            "format": self.format,
            "size_bytes": self.size_bytes,
            "files": {k: dict(v) for k, v in self.files.items()},
            "label": self.label,
            "kind": self.kind,
            "tables": dict(self.tables) if self.tables is not None else None,
            "duration_s": self.duration_s,
        }


def kind_of_label(label: str) -> str:
    """The kind of a backup whose manifest predates the `kind` field, from its label."""
    if label.startswith(SAFETY_LABEL):
        return "safety"
    if label.startswith(DEPLOY_LABEL):
        return "deploy"
    return "manual"


# --- reading ---------------------------------------------------------------------------------------


def load_backup(env: Environment, folder: Path) -> BackupInfo:
    """The BackupInfo of a backup folder, from its manifest alone (no checksums read)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = {str(k): {"size": int(v["size"]), "sha256": str(v["sha256"])} for k, v in data["files"].items()}
        label = str(data.get("label", ""))
        tables = data.get("tables")
        info = BackupInfo(
            id=str(data["id"]),
            environment=str(data["environment"]),
            version=None if data.get("version") is None else str(data["version"]),
            created_at=str(data["created_at"]),
            path=folder,
            format=str(data["format"]),
            size_bytes=sum(f["size"] for f in files.values()),
            files=files,
            label=label,
            kind=str(data.get("kind") or kind_of_label(label)),
            tables=None if tables is None else {str(k): int(v) for k, v in tables.items()},
            duration_s=None if data.get("duration_s") is None else float(data["duration_s"]),
        )
    except FileNotFoundError:
        raise BackupError(f"backup {folder.name} has no {MANIFEST}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"backup {folder.name}: unreadable {MANIFEST} ({type(exc).__name__})") from None
    if (
        info.id != folder.name
        or info.environment != env.name
        or info.format not in BACKUP_FORMATS
        or info.kind not in KINDS
    ):
        raise BackupError(
            f"backup {folder.name}: {MANIFEST} describes another backup "
            f"(id {info.id!r}, environment {info.environment!r}, format {info.format!r}, "
            f"kind {info.kind!r})"
        )
    return info


def list_backups(env: Environment) -> list[BackupInfo]:
    """Complete backups of the environment, newest first. Temp folders and folders whose manifest
    is missing or unreadable are not backups and are skipped."""
    root = env.backups_path
    if not root.is_dir():
        return []
    found = []
    for entry in os.scandir(root):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            validate_backup_id(entry.name)
            found.append(load_backup(env, Path(entry.path)))
        except (InputError, BackupError):
            continue
    found.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    return found


def backup_day(info: BackupInfo, timezone: str) -> date:
    """The day a backup was taken on, in the config's time zone: its partition of the backups asset."""
    return datetime.fromisoformat(info.created_at).astimezone(ZoneInfo(timezone)).date()


def backups_of_day(env: Environment, day: date, timezone: str) -> list[BackupInfo]:
    """Complete backups of the environment taken on `day` (config time zone), newest first."""
    return [b for b in list_backups(env) if backup_day(b, timezone) == day]


def backup_age_hours(info: BackupInfo, now: datetime | None = None) -> float:
    return ((now or datetime.now(UTC)) - datetime.fromisoformat(info.created_at)).total_seconds() / 3600


def newest_good_backup(env: Environment) -> tuple[BackupInfo | None, list[tuple[str, str]]]:
    """The newest backup whose files match its manifest, and (id, reason) of the newer ones that do not."""
    bad: list[tuple[str, str]] = []
    for info in list_backups(env):
        try:
            return verify_backup(env, info.id), bad
        except (IntegrityError, BackupError, InputError) as exc:
            bad.append((info.id, str(exc)))
    return None, bad


def damaged_backups(env: Environment) -> list[tuple[str, str]]:
    """(id, reason) of the folders named like backups whose manifest cannot be read: not
    restorable, but an operator must see them rather than find them missing."""
    root = env.backups_path
    if not root.is_dir():
        return []
    damaged = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name, reverse=True):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            validate_backup_id(entry.name)
        except InputError:
            continue
        try:
            load_backup(env, Path(entry.path))
        except BackupError as exc:
            damaged.append((entry.name, str(exc)))
    return damaged


def get_backup(env: Environment, backup_id: str) -> BackupInfo:
    validate_backup_id(backup_id)
    folder = env.backups_path / backup_id
    if not (folder / MANIFEST).is_file() or folder.is_symlink():
        raise InputError(
            f"unknown backup id {backup_id!r} for environment {env.name} "
            f"(see the list of backups in {env.backups_path})"
        )
    return load_backup(env, folder)


def verify_backup(env: Environment, backup_id: str) -> BackupInfo:
    """Check that the folder holds exactly the manifest's files with their sizes and sha256.
    Cheap checks (missing, extra, size) come first so a truncated backup fails without hashing."""
    info = get_backup(env, backup_id)
    present = set(walk_files(info.path)) - {MANIFEST}
    expected = set(info.files)
    for rel in sorted(expected | present):
        if rel not in present:
            raise IntegrityError(f"backup {backup_id}: {rel} is missing")
        if rel not in expected:
            raise IntegrityError(f"backup {backup_id}: {rel} is not in the manifest")
        size = (info.path / rel).stat().st_size
        if size != info.files[rel]["size"]:
            raise IntegrityError(
                f"backup {backup_id}: {rel} has {size} bytes, the manifest says {info.files[rel]['size']}"
            )
    actual = hash_files(info.path, expected)
    for rel in sorted(expected):
        if actual[rel]["sha256"] != info.files[rel]["sha256"] or actual[rel]["size"] != info.files[rel]["size"]:
            raise IntegrityError(f"backup {backup_id}: checksum mismatch in {rel}")
    if info.format == "directory" and not any(r.startswith(DUMP_DIR + "/") for r in expected):
        raise IntegrityError(f"backup {backup_id}: no {DUMP_DIR}/ dump")
    if info.format == "custom" and DUMP_FILE not in expected:
        raise IntegrityError(f"backup {backup_id}: no {DUMP_FILE}")
    if FILES_ARCHIVE not in expected:
        raise IntegrityError(f"backup {backup_id}: no {FILES_ARCHIVE}")
    return info


# --- temp folders ----------------------------------------------------------------------------------


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + _random.token_hex(2)


def owner_file(tmp: Path) -> Path:
    """Beside the temp folder, not in it: the folder is renamed into place exactly as the manifest
    lists it, and the owner stays known until that rename."""
    return tmp.with_name(tmp.name + OWNER_SUFFIX)


def write_owner_file(tmp: Path) -> None:
    """Mark a temp folder as this process's, so clean_stale_temps keeps it while we live."""
    owner_file(tmp).write_text(json.dumps(this_process()))


def clean_stale_temps(env: Environment, log: Log) -> list[str]:
    """Remove `.tmp-*` folders left by crashed backups: their writer (same host) is dead, or the
    writer is unknown (another host, or killed before it wrote its owner file) and the folder is
    older than an hour. A live writer's folder is kept however long its dump runs."""
    root = env.backups_path
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for entry in os.scandir(root):
        if (
            entry.name.startswith(TMP_PREFIX)
            and entry.name.endswith(OWNER_SUFFIX)
            and not Path(entry.path[: -len(OWNER_SUFFIX)]).exists()
        ):
            Path(entry.path).unlink(missing_ok=True)  # its backup was renamed into place or removed
            continue
        if not entry.name.startswith(TMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        try:
            alive = owner_alive(json.loads(owner_file(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            alive = None
        if alive is None:
            try:
                alive = time.time() - entry.stat(follow_symlinks=False).st_mtime <= STALE_TEMP_AGE_S
            except FileNotFoundError:
                continue
        if not alive:
            shutil.rmtree(path, ignore_errors=True)
            owner_file(path).unlink(missing_ok=True)
            removed.append(entry.name)
            log.info(f"removed {entry.name}: left by an interrupted backup")
    return removed
