"""Who owns a lock, a temp folder or a run: a process named so it can be told dead later.

A pid alone is not enough: pids are reused. The kernel's start time of the process, with the pid
and the host, names one process for as long as the machine runs (procfs.py reads both).
"""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from ultra_ops.engine import procfs


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process as owner records keep it (a decimal string), None where
    /proc is not available or the process is gone."""
    start = procfs.start_time(pid)
    return None if start is None else str(start)


def this_process() -> dict[str, Any]:
    """This process as an owner record: host, pid and start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}


def this_user() -> str:
    """Who runs this process, as the machine names them (records and tags say who did what)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}"


def owner_alive(owner: dict[str, Any]) -> bool | None:
    """True/False when the owner is known to be alive/dead; None when it cannot be told (another
    host, or a record without a pid)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    # Another user's process may own the record (a daemon running as someone else): it counts.
    return procfs.is_alive(pid, owner.get("start"), another_users=True)
