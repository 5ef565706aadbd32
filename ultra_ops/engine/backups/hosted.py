"""The dump tools of an environment on a host of its own: pg_dump and pg_restore run where the
database is, and the dump is kept here, where losing that host does not lose it.

Both run inside the compose project's `postgres` container on the host (`docker exec -i` over
ssh, the container found by its compose labels in the same connection: `docker ps` and `docker
exec`, where `docker-compose exec` would start compose's Python first). The container's tools are
the server's own build, so the version check of a local pg_dump is met by construction: nothing to
compare, only the version to record (the tool says it on stderr as it starts). They reach the
server over the container's local socket as the configured user.

A dump is custom format written to pg_dump's stdout and streamed over ssh into the backup folder
on this machine, hashed as it is written (temporary folder, then rename, as every backup): no
dump file is ever written on the host, so a full or lost host disk cannot hold the only copy. A
restore streams the file back over ssh into pg_restore's stdin (one job: a stream cannot be read
in parallel), into the scratch database the swap then renames into place; the swap itself, the row
counts and the scratch databases go through the configured database address as for any
environment.

The password, when there is one, is the first line on the tool's stdin, read by the container's
shell before the tool starts: never in an argument list, here or on the host.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from ultra_ops.engine import shell
from ultra_ops.engine.backups.checksums import READ_CHUNK
from ultra_ops.engine.backups.dump import checked_tool_version, dump_source, run_pg_tool
from ultra_ops.engine.backups.store import BackupInfo
from ultra_ops.engine.crash_points import crash_point
from ultra_ops.engine.errors import BackupError, CommandFailed
from ultra_ops.engine.files import fsync_dir, start_writeback
from ultra_ops.engine.hosts.ssh import HostUnreachable, SshHost
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment

DATABASE_SERVICE = "postgres"  # the document's layout: the stores' service holding the database
# In the database container: the password line first (dash reads a pipe a byte at a time, so
# `read` takes exactly that line), the tool's version on stderr (recorded in the manifest), then
# each SNAPSHOT_ARG among the tool's arguments replaced by `--snapshot=` and the next line (the
# snapshot's id, sent once it exists: everything up to here runs meanwhile), then the tool with the
# rest of stdin. No line (our side gave up): the tool never starts.
SNAPSHOT_ARG = "@snapshot"
_IN_CONTAINER = (
    'IFS= read -r PGPASSWORD; if [ -n "$PGPASSWORD" ]; then export PGPASSWORD; else unset PGPASSWORD; fi; '
    '"$1" --version >&2; '
    f'for a do shift; if [ "$a" = {SNAPSHOT_ARG} ]; then IFS= read -r a || exit 1; a="--snapshot=$a"; fi; '
    'set -- "$@" "$a"; done; exec "$@"'
)
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")
# On the host: the project's running database container ($1 project, $2 service) put in place of
# _CONTAINER in the docker command that follows.
_CONTAINER = "@container"
NO_CONTAINER_EXIT = 112
_ON_HOST = (
    'c=$(docker ps -q --filter "label=com.docker.compose.project=$1" --filter "label=com.docker.compose.service=$2" '
    "--filter status=running | head -n 1) || exit 1; shift 2; "
    f'[ -n "$c" ] || exit {NO_CONTAINER_EXIT}; '
    f'for a do shift; [ "$a" = {_CONTAINER} ] && a=$c; set -- "$@" "$a"; done; exec "$@"'
)
_VERSION = re.compile(r"^(pg_dump|pg_restore) \(PostgreSQL\) .*$", re.M)
# The dump goes to disk as it arrives, this much at a time: its fsync at the end then waits for
# the last part only (a few hundred MB left dirty until then is seconds on a disk of ~150 MB/s).
WRITEBACK_BYTES = 8 << 20
STREAMING_POINT = "backup:streaming"  # crash point: the dump's first bytes are written here
RESTORE_STREAMING_POINT = "restore:streaming"  # crash point: the dump's first bytes are sent to the host


class DatabaseHostLost(BackupError):
    """The connection to the environment's host was lost (or never made) while a tool ran there:
    the database is out of reach too, so nothing on it can be tidied up now."""


def on_host(env: Environment) -> bool:
    return env.host is not None


class HostedDatabase:
    """The database container of an environment's compose project, on the environment's host."""

    def __init__(self, env: Environment, redact: Redactor) -> None:
        self.env = env
        self.redact = redact
        self.host = SshHost.for_environment(env, redact=redact)
        self.project = env.compose_project or f"ultra-{env.name}"
        self.versions: dict[str, str] = {}  # tool -> its `--version`, as the container said it last

    @property
    def where(self) -> str:
        return f"the {DATABASE_SERVICE} container of {self.project} on {self.host.where}"

    def exec_argv(self, tool_args: list[str], *, app: str, options: str | None = None) -> list[str]:
        """ssh running `tool_args` in the database container, its password line first on stdin.
        One connection does it all (finding the container, the tool's version, the tool): each
        ssh connection costs a round of key exchange, a fixed cost a small backup would feel."""
        db = self.env.database
        variables = {"PGUSER": db.user, "PGDATABASE": db.name, "PGAPPNAME": f"ultra_ops-{app}"}
        if options:
            variables["PGOPTIONS"] = options
        pairs = [arg for key, value in variables.items() for arg in ("-e", f"{key}={value}")]
        docker = ["docker", "exec", "-i", *pairs, _CONTAINER, "sh", "-c", _IN_CONTAINER, "sh", *tool_args]
        return self.host.argv(["sh", "-c", _ON_HOST, "sh", self.project, DATABASE_SERVICE, *docker])

    def _password_line(self) -> bytes:
        password = self.env.database.password() or ""
        if "\n" in password or "\r" in password:
            raise BackupError(f"{self.env.name}: the database password holds a line break: it cannot be handed on")
        return password.encode() + b"\n"

    def _stream(
        self,
        tool_args: list[str],
        *,
        app: str,
        what: str,
        sink: Callable[[bytes], None] | None = None,
        after: Iterator[bytes] | None = None,
        options: str | None = None,
        heartbeat: Callable[[float], None] | None = None,
    ) -> str:
        argv = self.exec_argv(tool_args, app=app, options=options)
        self.host.check_setup()

        def source() -> Iterator[bytes]:
            yield self._password_line()
            if after is not None:
                yield from after

        try:
            proc = shell.stream(
                argv,
                timeout=self.env.backup.timeout_s,
                sink=sink,
                source=source(),
                redact=self.redact,
                heartbeat=heartbeat,
                error=CommandFailed,
            )
        except CommandFailed as exc:
            raise BackupError(self.redact(f"{what} on {self.host.where}: {exc}")) from None
        for found in _VERSION.finditer(proc.stderr):
            self.versions[found.group(1)] = found.group(0).strip()
        failure = self.host.failure(proc.stderr, proc.returncode)
        if proc.returncode == NO_CONTAINER_EXIT:
            raise BackupError(
                f"{self.env.name}: no running {DATABASE_SERVICE} service in compose project {self.project} "
                f"on {self.host.where}: start the stores first"
            )
        if failure is not None:
            kind = DatabaseHostLost if isinstance(failure, HostUnreachable) else BackupError
            raise kind(self.redact(f"{what} on {self.host.where} failed: {failure.reason}")) from None
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-5:]) or "no output on stderr"
            raise BackupError(self.redact(f"{what} in {self.where} exited {proc.returncode}: {tail}"))
        return proc.stderr

    def dump(
        self,
        args: list[str],
        dest: Path,
        *,
        app: str,
        heartbeat: Callable[[float], None] | None = None,
        snapshot: Callable[[], str] | None = None,
    ) -> dict[str, int | str]:
        """Run `pg_dump <args>` (custom format to stdout) in the container and write its output to
        `dest` here (new file, 0600, fsynced), hashed as it arrives; returns its size and sha256.
        `snapshot`: called (in another thread) for the id of the exported snapshot pg_dump imports;
        the ssh session, the container's lookup and the tool's version run while it is waited
        for. What it raises ends the dump before pg_dump starts, and is raised here."""
        after = None
        if snapshot is not None:
            args = [*args, SNAPSHOT_ARG]

            def snapshot_line() -> Iterator[bytes]:
                found = snapshot()
                if not _SNAPSHOT_ID.fullmatch(found):
                    raise BackupError(f"not a snapshot id: {found[:40]!r}")
                yield found.encode() + b"\n"

            after = snapshot_line()
        digest = hashlib.sha256()
        size = 0
        synced = [0]  # bytes handed to the disk so far (start_writeback)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb", buffering=0) as out:

            def sink(chunk: bytes) -> None:
                nonlocal size
                view = memoryview(chunk)
                while view:
                    view = view[out.write(view) :]
                digest.update(chunk)
                if size == 0:
                    crash_point(STREAMING_POINT)
                size += len(chunk)
                if size - synced[0] >= WRITEBACK_BYTES:
                    start_writeback(out.fileno(), synced[0], size - synced[0])
                    synced[0] = size

            self._stream(["pg_dump", *args], app=app, what="pg_dump", sink=sink, after=after, heartbeat=heartbeat)
            os.fsync(out.fileno())
        fsync_dir(dest.parent)
        return {"size": size, "sha256": digest.hexdigest()}

    def restore(
        self,
        source: Path,
        database: str,
        *,
        app: str,
        options: str | None = None,
        heartbeat: Callable[[float], None] | None = None,
    ) -> None:
        """Stream the custom-format dump `source` (here) into pg_restore in the container, into
        `database` (which exists, empty)."""
        target = "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"

        def chunks() -> Iterator[bytes]:
            with open(source, "rb", buffering=0) as f:
                first = True
                while chunk := f.read(READ_CHUNK):
                    yield chunk
                    if first:
                        crash_point(RESTORE_STREAMING_POINT)
                        first = False

        self._stream(
            ["pg_restore", "-Fc", "--exit-on-error", "-d", target],
            app=app,
            what="pg_restore",
            after=chunks(),
            options=options,
            heartbeat=heartbeat,
        )


def restore_dump(
    env: Environment,
    info: BackupInfo,
    database: str,
    *,
    app: str,
    options: str,
    jobs: int,
    redact: Redactor,
    heartbeat: Callable[[float], None] | None = None,
) -> None:
    """pg_restore a backup's dump into `database` (existing, empty). An environment on a host of
    its own: a custom-format dump (what its backups are) streamed to the host's pg_restore;
    anything else (a directory-format backup taken before it moved) is restored by pg_restore here
    through the configured address, as for a local environment, its version checked first."""
    fmt, source = dump_source(info)
    if on_host(env) and info.format == "custom":
        HostedDatabase(env, redact).restore(Path(source), database, app=app, options=options, heartbeat=heartbeat)
        return
    if on_host(env):
        checked_tool_version("pg_restore", env, redact)
    target = "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"
    # A custom-format file is seekable, so pg_restore can run parallel jobs on it too.
    run_pg_tool(
        ["pg_restore", fmt, "-j", str(jobs), "--exit-on-error", "-d", target, source],
        env,
        app=app,
        redact=redact,
        extra_env={"PGOPTIONS": f"{os.environ.get('PGOPTIONS', '')} {options}".strip()},
        heartbeat=heartbeat,
    )
