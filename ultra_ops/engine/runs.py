"""The run that holds an environment's lock, as a marker file the next holder can read.

`<state_dir>/run.json` is written when a run takes the lock and removed when it lets go of it. The
lock itself is dropped by the kernel when its holder dies, so a marker that the next holder finds
is a run that ended without finishing: killed (`kill -9`, a power cut), or interrupted and left so
on purpose. The marker says what the recovery of that run needs:

    record      the release record to write if the run never writes its own, so every such run
                leaves one, `interrupted`: there from the marker's first write for a deploy or
                rollback (begin's `record`), then kept current by their steps (records.py)
    services    which services ran when the run began: what the last completed operation left
                running, to be put back once the run is gone
    unsettled   `services` came from a run that did not finish, and are not yet put back: carried
                from marker to marker until `ultra-ops recover`, a deploy, rollback or stop
                settles them

Written atomically (temp file, fsync, rename): a kill leaves the old marker or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.owners import this_process
from ultra_ops.engine.settings import Environment

MARKER = "run.json"
# Operations that leave the services in a state of their own choosing when they end (a failure says
# which): carried, unsettled services are theirs to drop. A backup or a prune carries them on.
SETTLING_OPERATIONS = ("deploy", "rollback", "stop", "recover")


def marker_path(env: Environment) -> Path:
    return env.state_dir / MARKER


def read_marker(env: Environment) -> dict[str, Any] | None:
    """The marker, or None. A torn or foreign file reads as none: it cannot name a run."""
    try:
        data = json.loads(marker_path(env).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(env: Environment, marker: dict[str, Any]) -> None:
    path = marker_path(env)
    private_dir(path.parent)
    tmp = path.with_name(f".{MARKER}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(marker, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_marker(env: Environment) -> None:
    marker_path(env).unlink(missing_ok=True)


def begin(
    env: Environment, *, operation: str, run_id: str | None, record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Mark the run that just took the lock (after recovery). Services a previous unfinished run
    left unsettled stay in the new marker: only a run that settles them drops them. `record`: the
    draft a deploy or rollback would leave, there from the marker's first write, so that a run
    killed before its first step still leaves one (and the services that run, as note_record)."""
    for tmp in env.state_dir.glob(f".{MARKER}.*") if env.state_dir.is_dir() else ():
        tmp.unlink(missing_ok=True)  # a run killed while it wrote its marker; the lock is ours now
    previous = read_marker(env)
    carried = previous is not None and previous.get("run_id") != run_id and previous.get("services") is not None
    marker = {
        "environment": env.name,
        "operation": operation,
        "run_id": run_id,
        **this_process(),  # host, pid, start: the owner the next holder tells dead
        "started_at": utc_timestamp(),
        "services": previous["services"] if carried else None,
        "unsettled": carried,  # a marker is left only by a run that did not finish
        "record": record,
        "interrupted": False,
    }
    if record is not None and marker["services"] is None:
        marker["services"] = running_services(env)
    write_marker(env, marker)
    return marker


def update(env: Environment, run_id: str | None, **fields: Any) -> dict[str, Any] | None:
    """Change fields of this run's marker; None (nothing written) when the marker is another run's
    or there is none (engine code run without the lock resource, as in tests)."""
    marker = read_marker(env)
    if marker is None or marker.get("run_id") != run_id:
        return None
    marker.update(fields)
    write_marker(env, marker)
    return marker


def note_record(env: Environment, record: dict[str, Any]) -> None:
    """A deploy or rollback step begins: keep the record its run would leave in the marker, and
    note once, before the run changes anything, which services run."""
    marker = read_marker(env)
    if marker is None or marker.get("run_id") != record.get("run_id"):
        return
    marker["record"] = record
    if marker.get("services") is None:
        marker["services"] = running_services(env)
    write_marker(env, marker)


def running_services(env: Environment) -> list[str] | None:
    """The names of the services that run now; None when the runtime cannot tell."""
    from ultra_ops.engine.runtimes import application, get_runtime  # the runtimes import much: only when asked

    try:
        return [s.name for s in application(get_runtime(env).status(usage=False)) if s.running]
    except Exception:  # noqa: BLE001 - no docker here, say: unknown, and recovery then leaves them be
        return None


def end(env: Environment, run_id: str | None) -> None:
    """The run lets go of the lock. Its marker stays where the environment still needs settling (an
    interrupted run, or services carried unsettled through this run): the next holder reads it."""
    marker = read_marker(env)
    if marker is None or marker.get("run_id") != run_id:
        return
    settles = str(marker.get("operation", "")).split(" ")[0] in SETTLING_OPERATIONS
    # `restart`: a run that failed with the services stopped after it changed the state (a rollback
    # whose start failed, say) leaves them to `recover`, which starts them once the cause is fixed.
    if marker.get("interrupted") or marker.get("restart") or (marker.get("unsettled") and not settles):
        write_marker(env, {**marker, "pid": None, "ended_at": utc_timestamp()})
    else:
        remove_marker(env)


def unfinished(env: Environment, run_id: str | None = None) -> dict[str, Any] | None:
    """The marker of a run other than `run_id` (with the lock held: a run that ended unfinished)."""
    marker = read_marker(env)
    if marker is None or (run_id is not None and marker.get("run_id") == run_id):
        return None
    return marker
