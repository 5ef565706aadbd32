"""What the kernel says about processes, from /proc: a process's state and start time, its CPU
time, resident memory and open files, the members of its process group, the flocks held, and the
machine's memory.

A pid alone does not name a process: the kernel reuses pids. The start time (field 22 of
/proc/<pid>/stat, clock ticks since boot) with the pid does, for as long as the machine runs, so
every liveness question here takes both. Where /proc is missing (not Linux) each reader returns
None and `is_alive` falls back to signal 0, which can say whether a pid exists and no more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_GONE = ("Z", "X")  # a zombie has exited: only its parent's wait is missing


@dataclass(frozen=True)
class ProcessStat:
    """The fields of /proc/<pid>/stat that ultra_ops reads."""

    state: str  # R, S, D, Z, X ... (field 3)
    group: int  # process group id (field 5)
    start_time: int  # clock ticks since boot (field 22)
    cpu_seconds: float  # user + system time (fields 14 and 15)
    resident_bytes: int  # resident set size (field 24, in pages)


def _fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (so [0] is field 3), None if no such pid."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 1 :].split() if ")" in text else None


def process_stat(pid: int | str) -> ProcessStat | None:
    """The process's state, group, start time, CPU time and resident memory; None if it is gone."""
    fields = _fields(pid)
    if fields is None:
        return None
    try:
        return ProcessStat(
            state=fields[0],
            group=int(fields[2]),
            start_time=int(fields[19]),
            cpu_seconds=(int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),
            resident_bytes=int(fields[21]) * os.sysconf("SC_PAGE_SIZE"),
        )
    except (ValueError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The kernel's start time of a process, None where /proc is not available or it is gone."""
    stat = process_stat(pid)
    return None if stat is None else stat.start_time


def open_files(pid: int) -> int | None:
    """How many file descriptors the process has open; None if it is gone or not ours to look at."""
    try:
        return len(os.listdir(PROC / str(pid) / "fd"))
    except OSError:
        return None


def is_alive(pid: int, start: int | str | None = None, *, another_users: bool = False) -> bool:
    """Whether `pid` is a running process (not exited, not a zombie) and, when its start time is
    known, still the same process: a pid the kernel reused is not.

    `start` as this module or an owner record gives it (an int, or its decimal string).
    `another_users`: whether a process of another user counts (it does for an owner record; a
    service we started is ours). Where /proc is missing, or hides other users' processes, only
    signal 0 is left, which cannot tell a reused pid.
    """
    stat = process_stat(pid) if PROC.is_dir() else None
    if stat is None:
        if PROC.is_dir() and not another_users:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return another_users
        return True
    if stat.state in _GONE:
        return False
    return start is None or str(stat.start_time) == str(start)


def group_members(pgid: int) -> list[int]:
    """Live processes of group `pgid` other than its leader.

    The leader is left out on purpose: once it has exited its pid may belong to someone else.
    """
    members = []
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == pgid:
            continue
        stat = process_stat(entry.name)
        if stat is not None and stat.state not in _GONE and stat.group == pgid:
            members.append(int(entry.name))
    return members


def _flock_lines(st: os.stat_result) -> tuple[str, list[list[str]]] | None:
    """The inode's id in /proc/locks and its FLOCK lines there, split; None where it is unavailable."""
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open(PROC / "locks", encoding="ascii", errors="replace") as f:
            return device, [line.split() for line in f if " FLOCK " in line and f" {device} " in line]
    except OSError:
        return None


def flock_held(st: os.stat_result) -> bool | None:
    """Whether some process holds a flock on this file's inode; None where /proc/locks is unavailable."""
    found = _flock_lines(st)
    return None if found is None else bool(found[1])


def flock_pids(st: os.stat_result) -> list[int] | None:
    """The pids holding a flock on this file's inode, as the kernel shows them (the process that took
    the lock; waiters, "->" lines, left out); None where /proc/locks is unavailable."""
    found = _flock_lines(st)
    if found is None:
        return None
    device, lines = found
    # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF": the pid is the field before the inode's id.
    pids = [p[p.index(device) - 1] for p in lines if "->" not in p]
    return [int(pid) for pid in pids if pid.isdigit()]


def memory_mb() -> tuple[int, int] | None:
    """(available, total) memory of the machine in MB; None where /proc/meminfo cannot be read."""
    try:
        info = dict(line.split(":", 1) for line in (PROC / "meminfo").read_text().splitlines() if ":" in line)
        return int(info["MemAvailable"].split()[0]) // 1024, int(info["MemTotal"].split()[0]) // 1024
    except (OSError, KeyError, ValueError):
        return None
