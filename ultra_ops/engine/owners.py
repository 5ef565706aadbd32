"""Who owns a lock, a temp folder or a run: a process named so it can be told dead later.

A pid alone is not enough: pids are reused. The kernel's start time of the process, with the pid
and the host, names one process for as long as the machine runs.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process, None where /proc is not available or it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the "(comm)" field


def this_process() -> dict[str, Any]:
    """This process as an owner record: host, pid and start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}


def owner_alive(owner: dict[str, Any]) -> bool | None:
    """True/False when the owner is known to be alive/dead; None when it cannot be told (another
    host, or a record without a pid)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        pid = int(owner["pid"])
        os.kill(pid, 0)
    except (KeyError, TypeError, ValueError):
        return None
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = process_start(pid)
    if start is not None and owner.get("start") is not None and start != owner["start"]:
        return False  # the pid was reused by another process
    return True
