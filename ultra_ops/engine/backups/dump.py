"""The dump tools: running pg_dump/pg_restore, and hashing a directory-format dump as it is written."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ultra_ops.engine import shell
from ultra_ops.engine.backups.checksums import READ_CHUNK
from ultra_ops.engine.errors import BackupError, CommandFailed
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")


def default_jobs(env: Environment) -> int:
    return env.backup.jobs or os.cpu_count() or 1


def pg_env(env: Environment, app: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What pg_dump/pg_restore get besides the basics (shell.child_env): the PG* variables, so the
    secret travels only here, never in argv, and a connect timeout, so a server that accepts and
    never answers fails the tool within it. No statement_timeout: both tools set their own to 0 (a
    restore's index builds may rightly take long); the run as a whole has `backup.timeout_s`."""
    return {
        **env.database.libpq_env(),
        "PGAPPNAME": f"ultra_ops-{app}",
        "PGCONNECT_TIMEOUT": str(env.database.libpq_connect_timeout()),
        **(extra or {}),
    }


def run_pg_tool(
    args: Sequence[str],
    env: Environment,
    *,
    app: str,
    redact: Redactor,
    extra_env: dict[str, str] | None = None,
    error: type[Exception] = BackupError,
    heartbeat: Callable[[float], None] | None = None,
    every_s: float = 15.0,
    timeout: float | None = None,
) -> str:
    """Run pg_dump/pg_restore with stdout/stderr captured (both are small: data goes to files).
    `heartbeat(elapsed_s)` is called every `every_s` while it runs, so long dumps show progress.
    The tool dies with us, even when we are killed: it must not write on into a folder that the
    next backup is about to clean up."""
    proc = shell.run(
        args,
        env=pg_env(env, app, extra_env),
        timeout=timeout or env.backup.timeout_s,
        redact=redact,
        error=error,
        die_with_parent=True,
        heartbeat=heartbeat,
        every_s=every_s,
    )
    return proc.stdout


def tool_version(tool: str) -> str:
    try:
        return shell.run([tool, "--version"], timeout=30).stdout.strip()
    except CommandFailed:
        raise BackupError(f"{tool} is not installed or does not run") from None


def checked_tool_version(tool: str, env: Environment, redact: Redactor) -> str:
    """`tool --version`, refused at once when the tool is older than the environment's server:
    pg_dump refuses a newer server only after it connected (a deploy's backup would fail midway),
    and an older pg_restore may not read what the server's pg_dump wrote. A server that cannot be
    reached is left for the tool itself to report, in its own words."""
    text = tool_version(tool)
    try:
        with psycopg.connect(**env.database.conninfo(env.database.maintenance_db)) as conn:
            server = conn.info.server_version
    except psycopg.Error:
        return text
    refuse_older_tool(tool, text, server, f"the PostgreSQL server of {env.name}", redact)
    return text


def refuse_older_tool(tool: str, version_text: str, server: int, where: str, redact: Redactor) -> None:
    """BackupError naming both versions when `version_text` (`tool --version`) is of an older major
    than `server` (libpq's server_version number, e.g. 150020)."""
    found = re.search(r"\d+(?:\.\d+)?", version_text.split(")", 1)[-1])  # "pg_dump (PostgreSQL) 15.20 (Debian ...)"
    server_major, server_minor = server // 10000, server % 10000
    if found and int(found.group(0).split(".")[0]) < server_major:
        raise BackupError(
            redact(
                f"{tool} {found.group(0)} is older than {where} ({server_major}.{server_minor}): {tool} must be of "
                f"major version {server_major} or newer (install postgresql-client-{server_major})"
            )
        )


class DumpFollower(threading.Thread):
    """Hashes a directory-format dump's data files while pg_dump is still writing them.

    pg_dump writes each table's data file once, front to back, so the bytes already on disk are
    final: hashing them as they arrive takes the checksum pass off the backup's critical path
    (the biggest table's file would otherwise be hashed by one thread after the dump). A file that
    does not end as it was followed (other size or inode) is left to the ordinary hash after the dump.
    """

    _DATA_FILE = re.compile(r"^(blob_)?\d+\.dat(\.gz)?$")

    def __init__(self, folder: Path) -> None:
        super().__init__(name="uo-hash-follow", daemon=True)
        self.folder = folder
        self._stop_event = threading.Event()
        self._files: dict[str, tuple[Any, Any, list[int]]] = {}  # name -> (sha256, file, [size])
        self._buf = bytearray(READ_CHUNK)

    def _poll(self) -> int:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        view, moved = memoryview(self._buf), 0
        for name in names:
            if not self._DATA_FILE.fullmatch(name):
                continue
            if name not in self._files:
                self._files[name] = (hashlib.sha256(), open(self.folder / name, "rb", buffering=0), [0])
            digest, f, size = self._files[name]
            while n := f.readinto(self._buf):
                digest.update(view[:n])
                size[0] += n
                moved += n
        return moved

    def run(self) -> None:
        while not self._stop_event.is_set():
            if not self._poll():
                self._stop_event.wait(0.05)

    def finish(self, *, complete: bool) -> dict[str, dict]:
        """Stop following; with complete=True (pg_dump succeeded) read what is left and return
        {relative path: {size, sha256}} for every file followed to its end."""
        self._stop_event.set()
        self.join()
        done: dict[str, dict] = {}
        if complete:
            self._poll()
        for name, (digest, f, size) in self._files.items():
            try:
                same = os.fstat(f.fileno()).st_ino == (self.folder / name).stat().st_ino
                if complete and same and (self.folder / name).stat().st_size == size[0]:
                    done[f"{self.folder.name}/{name}"] = {"size": size[0], "sha256": digest.hexdigest()}
            except OSError:
                pass
            finally:
                f.close()
        return done


# `<dump id>; <table oid> <oid> TABLE DATA <schema> <table> <owner>`: a table whose data is in the
# dump. Names are printed unquoted, so a name with a space is told apart only by what it should be.
_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (.*)$")


def dump_source(info: Any) -> tuple[str, str]:
    """(pg_restore format flag, path) of a backup's dump."""
    from ultra_ops.engine.backups.store import DUMP_DIR, DUMP_FILE

    if info.format == "directory":
        return "-Fd", str(info.path / DUMP_DIR)
    return "-Fc", str(info.path / DUMP_FILE)


def dump_listing(env: Environment, info: Any, *, redact: Redactor) -> list[str]:
    """The table of contents of a backup's dump, as `pg_restore --list` reads it (comments left
    out). BackupError when pg_restore cannot read the dump."""
    fmt, source = dump_source(info)
    listing = run_pg_tool(["pg_restore", fmt, "--list", source], env, app="restore-list", redact=redact, timeout=600)
    return [line for line in listing.splitlines() if line.strip() and not line.startswith(";")]


def tables_without_data(listing: list[str], tables: Iterable[str]) -> list[str]:
    """Of the "schema.table" names, those with no TABLE DATA entry in the listing."""
    rests = [m.group(1) + " " for line in listing if (m := _TABLE_DATA.match(line))]
    missing = []
    for name in tables:
        schema, _, table = name.partition(".")
        if not any(rest.startswith(f"{schema} {table} ") for rest in rests):
            missing.append(name)
    return sorted(missing)
