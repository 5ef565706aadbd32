"""Files on an environment's host: its env file, compose file and state files, written atomically.

A write goes to a temporary name in the same folder (same file system, so the rename is atomic),
gets its mode, is checked against the sha256 of what was sent, flushed to disk and only then
renamed over the old file. A writer killed half way (or a cut network) leaves a short temporary
file whose checksum does not match: it is removed and the old file stays as it was; a reader sees
the old content or the new, never a mix.

The remote scripts are constants; paths, modes and checksums travel as their arguments (quoted by
shlex.join), never spliced into the script.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from ultra_ops.engine.hosts.ssh import HostDiskFull, HostError, RemoteCommandFailed, SshHost

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_TIMEOUT_S = 60.0
# A write that failed where less than this is free failed for want of space: dash says only "I/O
# error" (and cat "write error") for ENOSPC, so the free space, not the message, tells.
_FULL_BELOW_KIB = 64
# Exit codes of the scripts below that mean something other than "the command failed".
_MISSING = 3
_CHECKSUM = 4

# $1 path, $2 mode (octal), $3 sha256 of the content, which comes on stdin.
_WRITE = r"""
set -eu
umask 077
tmp=$(mktemp "$1.tmp.XXXXXXXX")
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$tmp"
set -- "$1" "$2" "$3" "$(sha256sum < "$tmp")"
[ "${4%% *}" = "$3" ] || { echo "received content does not match what was sent" >&2; exit 4; }
chmod "$2" "$tmp"
sync -- "$tmp"
mv -f -- "$tmp" "$1"
trap - EXIT
sync -- "$(dirname -- "$1")" 2>/dev/null || true
"""

# $1 path: its content, or exit 3 when it does not exist.
_READ = r"""
[ -e "$1" ] || exit 3
exec cat -- "$1"
"""


def _absolute(path: PurePosixPath | str) -> PurePosixPath:
    p = PurePosixPath(path)
    if not p.is_absolute():
        raise ValueError(f"a path on a host must be absolute, got {str(p)!r}")
    return p


def write_atomic(
    host: SshHost,
    path: PurePosixPath | str,
    content: str,
    *,
    mode: int = PRIVATE_FILE_MODE,
    timeout: float = _TIMEOUT_S,
) -> None:
    """Replace `path` on the host with `content` (its folder must exist): all of it or nothing.
    HostDiskFull when it failed for want of space there."""
    try:
        host.run(write_command(path, content, mode=mode), timeout=timeout, input=content)
    except RemoteCommandFailed as exc:
        p = _absolute(path)
        raise disk_full(host, p.parent, f"{p.name} not written, the old one is as it was") or exc from None


def disk_full(host: SshHost, folder: PurePosixPath | str, left: str, *, timeout: float = 15.0) -> HostDiskFull | None:
    """After a write in `folder` on the host failed: HostDiskFull when its file system is full
    (`left`: what that left, for the message), else None (the failure is another's). One bounded
    `df` round trip, asked only after a failure."""
    try:
        proc = host.run(["df", "-Pk", "--", str(folder)], timeout=timeout, check=False)
    except HostError:
        return None  # the host no longer answers: the original error says enough
    rows = proc.stdout.strip().splitlines()
    fields = rows[-1].split() if proc.returncode == 0 and len(rows) > 1 else []
    if len(fields) < 6 or not fields[3].isdigit() or int(fields[3]) >= _FULL_BELOW_KIB:
        return None
    return HostDiskFull(
        host.where,
        f"no space left on the disk of {folder} ({int(fields[3])} KiB free on {fields[5]}): {left}; "
        "free space there and run the command again",
    )


def write_command(path: PurePosixPath | str, content: str, *, mode: int = PRIVATE_FILE_MODE) -> list[str]:
    """The remote command that replaces `path` with `content` read from its stdin."""
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
    return ["sh", "-c", _WRITE, "write", str(_absolute(path)), f"{mode:o}", digest]


def read(host: SshHost, path: PurePosixPath | str, *, timeout: float = _TIMEOUT_S) -> str | None:
    """The file's content, or None when it does not exist on the host."""
    p = _absolute(path)
    try:
        return host.run(["sh", "-c", _READ, "read", str(p)], timeout=timeout).stdout
    except RemoteCommandFailed as exc:
        if exc.returncode == _MISSING:
            return None
        raise


def make_dirs(
    host: SshHost, path: PurePosixPath | str, *, mode: int = PRIVATE_DIR_MODE, timeout: float = _TIMEOUT_S
) -> None:
    """`mkdir -p`: the folder and its missing parents (`mode` is the last folder's, if made here)."""
    p = _absolute(path)
    host.run(["mkdir", "-p", "-m", f"{mode:o}", "--", str(p)], timeout=timeout)


def remove(host: SshHost, path: PurePosixPath | str, *, timeout: float = _TIMEOUT_S) -> None:
    """Remove a file; one that is not there is no error."""
    p = _absolute(path)
    host.run(["rm", "-f", "--", str(p)], timeout=timeout)
